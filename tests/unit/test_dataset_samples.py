"""Uniform dataset samples and their pyautogui code (docs/dataset.md, "WebDataset shards").

The known-answer bundle is the one of docs/export-format.md (optin-bundle/3 known answers), recorded
with the screen scope as docs/dataset.md "Known answers" says, given to :func:`samples` as the
parsed members a checked bundle hands over.  Frames are real WebP files made by agent/frame_codec.py.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from agent.canonical_json import canonical
from agent.dataset import pyautogui_code as pc
from agent.dataset.samples import (
    MAX_TEXT_CHARS,
    PLACEHOLDER,
    PLACEHOLDER_SHA256,
    Sample,
    SampleRefused,
    parse_key,
    png_size,
    sample_key,
    samples,
    webp_size,
)
from agent.frame_codec import encode_image

ROOT = Path(__file__).resolve().parents[2]
SESSION = "20261127T213000Z-1a2b3c4d"
PSEUDONYM = "4e043fa221a4110a7fe2f061c1f25333"
TITLE = "Staff portal \u2014 Mozilla Firefox"
INSTRUCTION = "Sign in to the staff portal with the test account"
WINDOW = {"app_class": "firefox", "height": 800, "title": TITLE, "width": 1280, "x": 0, "y": 0}

#: pyautogui's KEY_NAMES (pyautogui/keynames.py, 0.9.54), which the key map must land in.
_PYAUTOGUI_NAMED = """accept add alt altleft altright apps backspace browserback browserfavorites
browserforward browserhome browserrefresh browsersearch browserstop capslock clear convert ctrl
ctrlleft ctrlright
decimal del delete divide down end enter esc escape execute f1 f10 f11 f12 f13 f14 f15 f16 f17 f18
f19 f2 f20 f21 f22 f23 f24 f3 f4 f5 f6 f7 f8 f9 final fn hanguel hangul hanja help home insert junja
kana kanji launchapp1 launchapp2 launchmail launchmediaselect left modechange multiply nexttrack
nonconvert num0 num1 num2 num3 num4 num5 num6 num7 num8 num9 numlock pagedown pageup pause pgdn pgup
playpause prevtrack print printscreen prntscrn prtsc prtscr return right scrolllock select separator
shift shiftleft shiftright sleep space stop subtract tab up volumedown volumemute volumeup win winleft
winright yen command option optionleft optionright""".split()  # noqa: SIM905 - the list as pyautogui has it
#: ... and its characters: tab, newline, return, space and printable ASCII but upper-case letters.
_PYAUTOGUI_CHARS = [
    "\t",
    "\n",
    "\r",
    " ",
    *(chr(c) for c in range(0x21, 0x41)),
    *(chr(c) for c in range(0x5B, 0x7F)),
]
PYAUTOGUI_KEY_NAMES = frozenset([*_PYAUTOGUI_CHARS, *_PYAUTOGUI_NAMED])


def webp(width: int, height: int) -> bytes:
    return encode_image(Image.new("RGB", (width, height), (200, 10, 10)))


def manifest(schema: str = "optin-bundle/3") -> dict[str, Any]:
    return {
        "schema": schema,
        "agent_version": "0.3.0",
        "session": SESSION,
        "volunteer": {"id": PSEUDONYM, "signing_key": "YYABxko+OONnWUIDogRkeOG+fxxNzmc5+iKsUGFC3Ro="},
        "consent": {"study_id": "web-tasks-2026", "consent_version": "3"},
    }


TASK = {
    "hints": {"app": "firefox", "url": "https://portal.example.org/"},
    "id": "sign-in",
    "instruction": INSTRUCTION,
    "outcome": "done",
    "source": "study",
    "steps": {"by_action": {}, "count": 3, "range": [0, 2]},
    "t_end_ns": 9_500_000_000,
    "t_start_ns": 5_000_000_000,
    "time_limit_s": 600,
}


def step(action: str, t: int, **fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "action": action,
        "button": None,
        "dx": None,
        "dy": None,
        "element": None,
        "events": [],
        "frame": 0,
        "keys": [],
        "t_end_ns": t + 80_000_000,
        "t_start_ns": t,
        "task": "sign-in",
        "text": None,
        "to_x": None,
        "to_y": None,
        "window": dict(WINDOW),
        "x": None,
        "y": None,
    }
    base.update(fields)
    return base


FRAME0 = {
    "format": "webp",
    "height": 800,
    "k": "frame",
    "left": 0,
    "member": "000000.webp",
    "reason": "click",
}
FRAME0 |= {"t_ns": 5_900_000_000, "top": 0, "v": 1, "width": 1280}
EVENTS = [
    {"k": "marker", "marker": "session_start", "t_ns": 1_000_000_000, "v": 1}
    | {"detail": {"mono_ns": 1_000_000_000, "wall_ns": 1_795_845_600_000_000_000}},
    {"k": "window_focus", "t_ns": 2_000_000_000, "v": 1},
]


def known_steps() -> list[dict[str, Any]]:
    return [
        step("click", 6_000_000_000, x=530, y=276, button="left", events=[3, 4]),
        step("type", 7_000_000_000, text="[EMAIL]"),
        step("key", 9_000_000_000, keys=["enter"]),
    ]


def build(
    steps: list[dict[str, Any]] | None = None,
    *,
    frames: list[dict[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    images: dict[int, bytes] | None = None,
    schema: str = "optin-bundle/3",
    tasks: list[dict[str, Any]] | None = None,
    man: dict[str, Any] | None = None,
) -> list[Sample]:
    frames = [FRAME0] if frames is None else frames
    if images is None:
        images = {n: webp(f["width"], f["height"]) for n, f in enumerate(frames)}
    return list(
        samples(
            man if man is not None else manifest(schema),
            known_steps() if steps is None else steps,
            tasks=[TASK] if tasks is None else tasks,
            frames=frames,
            events=EVENTS if events is None else events,
            images=images,
        )
    )


# --- known answers ------------------------------------------------------------------------------


def spec_sample() -> bytes:
    doc = (ROOT / "docs" / "dataset.md").read_text(encoding="utf-8")
    m = re.search(r'```\n(\{"action":"click","after_gap".*?)\n```', doc, re.S)
    assert m is not None
    return m.group(1).encode("utf-8")


def test_known_answer_click_sample_is_the_specs_bytes() -> None:
    first = build()[0]
    assert first.key == "20261127T213000Z-1a2b3c4d_000000"
    assert len(first.json) == 1068
    assert (
        hashlib.sha256(first.json).hexdigest()
        == "1eea9425ad50fe2b17622697fb8fe4ba2bb99f06aa1adbbec160c87c9c6c5faa"
    )
    assert first.json == spec_sample()
    assert first.has_image
    assert webp_size(first.image) == (1280, 800)


def test_known_answer_placeholder() -> None:
    assert len(PLACEHOLDER) == 30
    assert hashlib.sha256(PLACEHOLDER).hexdigest() == PLACEHOLDER_SHA256
    assert PLACEHOLDER_SHA256 == "e00c0ecd17536039354810dee10ec1574ab5ca6e1ef052e429358caf93198244"
    with Image.open(__import__("io").BytesIO(PLACEHOLDER)) as im:
        assert im.size == (1, 1)
        assert im.convert("RGB").getpixel((0, 0)) == (128, 128, 128)
    assert webp_size(PLACEHOLDER) == (1, 1)


def test_known_answer_step_without_frame() -> None:
    s = build([step("click", 6_000_000_000, x=530, y=276, button="left", frame=None)], images={})[0]
    assert not s.has_image
    assert s.image == PLACEHOLDER
    assert s.doc["frame"] is None
    assert s.doc["norm"] == {"code": None, "to_x": None, "to_y": None, "x": None, "y": None}
    assert s.doc["raw"]["x"] == 530


def test_known_answer_type_hotkey_drag() -> None:
    steps = [
        step("type", 6_000_000_000, text="[EMAIL]"),
        step("hotkey", 7_000_000_000, keys=["ctrl", "c"]),
        step("drag", 8_000_000_000, x=100, y=200, to_x=640, to_y=400, button="left"),
    ]
    t, h, d = (s.doc["norm"]["code"] for s in build(steps))
    assert t == "pyautogui.write(message='[EMAIL]')"
    assert h == "pyautogui.hotkey('ctrl', 'c')"
    assert d == "pyautogui.moveTo(x=0.0781, y=0.2500)\npyautogui.dragTo(x=0.5000, y=0.5000, button='left')"


def test_sample_fields_of_the_known_session() -> None:
    click, typed, key = build()
    assert typed.doc["task"] == {
        "id": "sign-in",
        "index": 1,
        "instruction": INSTRUCTION,
        "outcome": "done",
        "source": "study",
        "time_limit_s": 600,
    }
    assert key.doc["norm"]["code"] == "pyautogui.press('enter')"
    assert key.doc["utc_start_ns"] == 1_795_845_600_000_000_000 + 8_000_000_000
    assert [s.key for s in (click, typed, key)] == [f"{SESSION}_{n:06d}" for n in range(3)]
    # several steps share one frame: each sample carries its own copy
    assert click.image == typed.image == key.image


# --- uniform samples -------------------------------------------------------------------------------


def shape(value: Any) -> Any:
    """Keys at every depth with JSON types; None stands for null (any type may be null)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return "list"
    if value is None:
        return None
    return type(value).__name__


def merge(a: Any, b: Any, path: str = "") -> Any:
    """The shape both agree on; raises when keys or non-null types differ."""
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, dict) or isinstance(b, dict):
        assert isinstance(a, dict) and isinstance(b, dict), path
        assert set(a) == set(b), f"{path}: {set(a) ^ set(b)}"
        return {k: merge(a[k], b[k], f"{path}.{k}") for k in a}
    assert a == b or ({a, b} == {"int", "float"} and path.startswith(".norm")), f"{path}: {a} vs {b}"
    return a


ALL_ACTIONS = [
    step("click", 6_000_000_000, x=530, y=276, button="left"),
    step("double_click", 6_100_000_000, x=530, y=276, button="left"),
    step("right_click", 6_200_000_000, x=1, y=2, button="right"),
    step("middle_click", 6_300_000_000, x=1279, y=799, button="middle"),
    step("drag", 6_400_000_000, x=0, y=0, to_x=1280, to_y=800, button="left"),
    step("scroll", 6_500_000_000, x=10, y=20, dx=2, dy=-3),
    step("type", 6_600_000_000, text='it\'s "quoted"\n\\ [EMAIL] \u00e9\U0001f600'),
    step("key", 6_700_000_000, keys=["page_down"]),
    step("hotkey", 6_800_000_000, keys=["ctrl", "shift", "super", "t"]),
    step("type", 6_900_000_000, text=None),
    step("click", 7_000_000_000, x=5, y=5, button="left", frame=None, task=None, window=None),
]


def test_every_sample_has_the_same_keys_and_types() -> None:
    out = build(ALL_ACTIONS, tasks=[TASK | {"steps": {"by_action": {}, "count": 10, "range": [0, 9]}}])
    top = {
        "action", "after_gap", "agent_version", "bundle_schema", "consent_version", "element", "frame",
        "has_image", "key", "norm", "raw", "schema", "session", "step", "study", "t_end_ns", "t_start_ns",
        "task", "utc_end_ns", "utc_start_ns", "volunteer", "volunteer_verified", "window",
    }  # fmt: skip
    merged: Any = None
    for s in out:
        assert set(s.doc) == top
        assert set(s.doc["raw"]) == {"x", "y", "to_x", "to_y", "button", "dx", "dy", "text", "keys"}
        assert set(s.doc["norm"]) == {"x", "y", "to_x", "to_y", "code"}
        assert json.loads(s.json) == s.doc
        assert s.json == canonical(s.doc)
        merged = merge(merged, shape(s.doc))
    codes = [s.doc["norm"]["code"] for s in out]
    assert codes == [
        "pyautogui.click(x=0.4141, y=0.3450)",
        "pyautogui.doubleClick(x=0.4141, y=0.3450)",
        "pyautogui.rightClick(x=0.0008, y=0.0025)",
        "pyautogui.middleClick(x=0.9992, y=0.9988)",
        "pyautogui.moveTo(x=0.0000, y=0.0000)\npyautogui.dragTo(x=1.0000, y=1.0000, button='left')",
        "pyautogui.scroll(-3, x=0.0078, y=0.0250)\npyautogui.hscroll(2, x=0.0078, y=0.0250)",
        "pyautogui.write(message=" + repr(ALL_ACTIONS[6]["text"]) + ")",
        "pyautogui.press('pagedown')",
        "pyautogui.hotkey('ctrl', 'shift', 'win', 't')",
        None,
        None,
    ]


def test_optin_bundle_2_steps_get_every_key() -> None:
    old = {"action": "scroll", "x": 3, "y": 4, "dx": 0, "dy": 1, "t_start_ns": 6_000_000_000}
    old |= {"t_end_ns": 6_000_000_001, "frame": 0, "events": [1], "element": {"bogus": 1}, "task": "x"}
    s = build([old], schema="optin-bundle/2", tasks=[])[0]
    assert s.doc["raw"] == {"x": 3, "y": 4, "to_x": None, "to_y": None, "button": None, "dx": 0, "dy": 1} | {
        "text": None,
        "keys": [],
    }
    assert s.doc["task"] is None and s.doc["element"] is None and s.doc["window"] is None
    assert s.doc["volunteer_verified"] is True
    assert build([old], schema="optin-bundle/1", tasks=[])[0].doc["volunteer_verified"] is False


# --- normalisation and the round trip -------------------------------------------------------------


def test_multi_monitor_frame_with_negative_origin() -> None:
    frame = FRAME0 | {"left": -1920, "top": -200, "width": 3840, "height": 1280}
    steps = [
        step("click", 6_000_000_000, x=-1920, y=-200, button="left"),
        step("click", 6_100_000_000, x=0, y=0, button="left"),
        step("drag", 6_200_000_000, x=-1000, y=500, to_x=1919, to_y=1079, button="left"),
        step("click", 6_300_000_000, x=-1921, y=0, button="left", task=None),  # left of the virtual screen
    ]
    out = build(steps, frames=[frame])
    assert out[0].doc["norm"]["x"] == 0.0 and out[0].doc["norm"]["y"] == 0.0
    assert out[1].doc["norm"]["x"] == 0.5 and out[1].doc["norm"]["y"] == 200 / 1280
    for s in out[:3]:
        for call in pc.parse(s.doc["norm"]["code"]):
            kx = "x" if call.name != "dragTo" else "to_x"
            ky = "y" if call.name != "dragTo" else "to_y"
            assert pc.to_pixel(call.kwargs["x"], -1920, 3840) == s.doc["raw"][kx]
            assert pc.to_pixel(call.kwargs["y"], -200, 1280) == s.doc["raw"][ky]
    assert out[3].doc["norm"]["x"] == -1 / 3840  # unclamped
    assert out[3].doc["norm"]["code"] is None  # outside 0-1


@settings(max_examples=300, deadline=None)
@given(
    width=st.integers(1, 10_000),
    height=st.integers(1, 10_000),
    left=st.integers(-20_000, 20_000),
    top=st.integers(-20_000, 20_000),
    fx=st.floats(0, 1),
    fy=st.floats(0, 1),
    action=st.sampled_from(["click", "double_click", "right_click", "middle_click", "scroll", "drag"]),
)
def test_coordinates_round_trip_to_the_pixel(  # noqa: PLR0917 - hypothesis draws
    width: int, height: int, left: int, top: int, fx: float, fy: float, action: str
) -> None:
    x, y = left + round(fx * width), top + round(fy * height)
    fields: dict[str, Any] = {"x": x, "y": y, "button": "left"}
    if action == "drag":
        fields |= {"to_x": left + width - round(fx * width), "to_y": top + round(fy * height // 2)}
    if action == "scroll":
        fields |= {"dx": 0, "dy": 1, "button": None}
    frame = FRAME0 | {"left": left, "top": top, "width": width, "height": height}
    s = build([step(action, 6_000_000_000, **fields)], frames=[frame], images={0: fake_webp(width, height)})[
        0
    ]
    norm = s.doc["norm"]
    assert norm["x"] == (x - left) / width and norm["y"] == (y - top) / height
    calls = pc.parse(norm["code"])
    for call in calls:
        to = call.name == "dragTo"
        assert pc.to_pixel(call.kwargs["x"], left, width) == s.doc["raw"]["to_x" if to else "x"]
        assert pc.to_pixel(call.kwargs["y"], top, height) == s.doc["raw"]["to_y" if to else "y"]


def test_round_trip_beyond_10000_pixels_is_within_one_pixel() -> None:
    """docs/dataset.md says 1 px for wider screens: true up to 30,000 px (error ≤ 0.00005 × width)."""
    for width in (10_001, 11_520, 19_999, 30_000):
        worst = max(abs(pc.to_pixel(float(pc.coordinate(p / width)), 0, width) - p) for p in range(width + 1))
        assert worst <= 1, width
    assert max(abs(pc.to_pixel(float(pc.coordinate(p / 30_001)), 0, 30_001) - p) for p in range(30_002)) == 2


def fake_webp(width: int, height: int) -> bytes:
    """A VP8L header of that size (30 bytes; never decoded: the build reads headers only)."""
    bits = (width - 1) | ((height - 1) << 14)
    body = b"\x2f" + bits.to_bytes(4, "little") + bytes(5)
    chunk = b"VP8L" + len(body).to_bytes(4, "little") + body
    return b"RIFF" + (4 + len(chunk)).to_bytes(4, "little") + b"WEBP" + chunk


def test_fake_webp_header_matches_a_real_one() -> None:
    assert webp_size(fake_webp(1280, 800)) == webp_size(webp(1280, 800)) == (1280, 800)


# --- pyautogui code ------------------------------------------------------------------------------


def test_key_map_lands_in_pyautogui_key_names() -> None:
    assert set(pc.KEY_MAP.values()) <= PYAUTOGUI_KEY_NAMES
    assert pc.CHARACTER_KEYS <= PYAUTOGUI_KEY_NAMES
    assert pc.key_name("super") == pc.key_name("cmd_r") == "win"
    assert pc.key_name("alt_gr") == "altright"
    assert pc.key_name("media_previous") == "prevtrack"
    assert pc.key_name("f24") == "f24"
    assert pc.key_name("\u00e9") is None  # not a pyautogui key: press() would do nothing
    assert pc.key_name("T") is None
    assert pc.key_name("no_such_key") is None


@pytest.mark.parametrize(
    ("action", "fields", "expected"),
    [
        ("click", {"x": 0.5, "y": 0.25}, "pyautogui.click(x=0.5000, y=0.2500)"),
        ("click", {"x": 0.5, "y": 0.25, "button": "right"},
         "pyautogui.click(x=0.5000, y=0.2500, button='right')"),
        ("double_click", {"x": 1.0, "y": 0.0, "button": "left"},
         "pyautogui.doubleClick(x=1.0000, y=0.0000)"),
        ("right_click", {"x": 0.12345, "y": 0.5, "button": "right"},
         "pyautogui.rightClick(x=0.1235, y=0.5000)"),
        ("middle_click", {"x": 0.1, "y": 0.2, "button": "middle"},
         "pyautogui.middleClick(x=0.1000, y=0.2000)"),
        ("drag", {"x": 0, "y": 0, "to_x": 1, "to_y": 1, "button": "right"},
         "pyautogui.moveTo(x=0.0000, y=0.0000)\npyautogui.dragTo(x=1.0000, y=1.0000, button='right')"),
        ("scroll", {"x": 0.5, "y": 0.5, "dx": 0, "dy": 3}, "pyautogui.scroll(3, x=0.5000, y=0.5000)"),
        ("scroll", {"x": 0.5, "y": 0.5, "dx": -1, "dy": 0}, "pyautogui.hscroll(-1, x=0.5000, y=0.5000)"),
        ("type", {"text": "[EMAIL]"}, "pyautogui.write(message='[EMAIL]')"),
        ("type", {"text": "it's"}, 'pyautogui.write(message="it\'s")'),
        ("type", {"text": ""}, "pyautogui.write(message='')"),
        ("key", {"keys": ["esc"]}, "pyautogui.press('esc')"),
        ("key", {"keys": ["print_screen"]}, "pyautogui.press('printscreen')"),
        ("hotkey", {"keys": ["ctrl", "'"]}, 'pyautogui.hotkey(\'ctrl\', "\'")'),
        ("hotkey", {"keys": ["alt", "f4"]}, "pyautogui.hotkey('alt', 'f4')"),
    ],
)  # fmt: skip
def test_code_of_each_action(action: str, fields: dict[str, Any], expected: str) -> None:
    assert pc.code(action, **fields) == expected
    calls = pc.parse(expected)
    assert [c.name for c in calls][-1] in pc.FUNCTIONS
    if action == "type":
        assert calls[0].kwargs["message"] == fields["text"]
    if action in ("key", "hotkey"):
        args = calls[0].args
        assert list(args) == [pc.key_name(k) for k in fields["keys"]]


@pytest.mark.parametrize(
    ("action", "fields"),
    [
        ("click", {"x": None, "y": 0.5}),
        ("click", {"x": 1.00001, "y": 0.5}),
        ("click", {"x": -0.00001, "y": 0.5}),
        ("click", {"x": 0.5, "y": 0.5, "keys": ["ctrl"]}),  # ctrl+click: no single call says it
        ("click", {"x": 0.5, "y": 0.5, "button": "x1"}),
        ("drag", {"x": 0.5, "y": 0.5, "to_x": 2.0, "to_y": 0.5, "button": "left"}),
        ("drag", {"x": 0.5, "y": 0.5, "to_x": 0.6, "to_y": 0.5, "button": None}),
        ("scroll", {"x": 0.5, "y": 0.5, "dx": 0, "dy": 0}),
        ("scroll", {"x": 0.5, "y": 0.5, "dx": 0, "dy": 1, "keys": ["shift"]}),
        ("type", {"text": None}),
        ("key", {"keys": ["pause"]}),  # not in the spec's table
        ("key", {"keys": ["enter", "tab"]}),
        ("key", {"keys": []}),
        ("hotkey", {"keys": ["ctrl", "\u00e9"]}),
        ("nope", {}),
    ],
)
def test_code_is_null_when_it_cannot_be_written(action: str, fields: dict[str, Any]) -> None:
    assert pc.code(action, **fields) is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_typed_text_round_trips_through_the_code(text: str) -> None:
    source = pc.code("type", text=text)
    assert source is not None
    (call,) = pc.parse(source)
    assert call == pc.Call("write", (), {"message": text})


@pytest.mark.parametrize(
    "source",
    [
        "",
        "import os",
        "os.system('x')",
        "pyautogui.click(x=__import__('os'), y=0)",
        "pyautogui.screenshot()",
        "pyautogui.click(**{'x': 1})",
        "pyautogui.click(x=0.5, y=0.5",
        "(",
    ],
)
def test_parse_refuses_anything_else(source: str) -> None:
    with pytest.raises(ValueError, match=r"code|statement"):
        pc.parse(source)


# --- hostile input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "session",
    [
        "20261127T213000Z.1a2b3c4d",  # a dot: webdataset would split the key there
        "a" * 81,
        "a" * 128,
        "-leading-dash",
        "_x",
        "",
        "a/b",
        "a\nb",
        "\u0430bc",  # Cyrillic a
        "abc\u200b",
        None,
        42,
    ],
)
def test_session_ids_the_dataset_cannot_key_are_refused(session: Any) -> None:
    man = manifest() | {"session": session}
    with pytest.raises(SampleRefused, match="session id") as info:
        build(man=man)
    assert info.value.reason == "session_id_unsupported"
    assert info.value.stage == "dataset"
    assert "\n" not in str(info.value).split("session id", 1)[1].split("is not")[0]


def test_session_id_of_80_characters_is_accepted() -> None:
    session = "a" * 80
    out = build(man=manifest() | {"session": session})
    assert out[0].key == session + "_000000"
    assert parse_key(out[0].key) == (session, 0)


def test_sample_keys() -> None:
    assert sample_key(SESSION, 999_999) == SESSION + "_999999"
    assert parse_key(SESSION + "_000042") == (SESSION, 42)
    for bad in (SESSION + "_42", SESSION, SESSION + ".json_000001", "_000001", SESSION + "_0000001"):
        with pytest.raises(ValueError, match="not a sample key"):
            parse_key(bad)
    with pytest.raises(SampleRefused, match="step number"):
        sample_key(SESSION, 1_000_000)


@pytest.mark.parametrize(
    ("fields", "reason", "words"),
    [
        ({"x": 2**31, "y": 0}, "step_invalid", "32-bit"),
        ({"x": -(2**31) - 1, "y": 0}, "step_invalid", "32-bit"),
        ({"x": 10**400, "y": 0}, "step_invalid", "32-bit"),
        ({"x": True, "y": 0}, "step_invalid", "32-bit"),
        ({"x": 1.5, "y": 0}, "step_invalid", "32-bit"),
        ({"dy": "3"}, "step_invalid", "32-bit"),
        ({"text": "x" * (MAX_TEXT_CHARS + 1)}, "step_invalid", "over the"),
        ({"text": 7}, "step_invalid", "text"),
        ({"keys": ["ctrl"] * 17}, "step_invalid", "keys"),
        ({"keys": ["x" * 65]}, "step_invalid", "keys"),
        ({"keys": "enter"}, "step_invalid", "keys"),
        ({"button": ["left"]}, "step_invalid", "button"),
        ({"action": "teleport"}, "step_invalid", "nine actions"),
        ({"t_start_ns": -1}, "step_invalid", "t_start_ns"),
        ({"t_end_ns": 1}, "step_invalid", "t_start_ns"),
        ({"frame": 5}, "step_invalid", "frames.jsonl"),
        ({"frame": True}, "step_invalid", "frames.jsonl"),
        ({"window": {"title": "x"}}, "step_invalid", "window"),
        ({"window": WINDOW | {"width": 2**40}}, "step_invalid", "window"),
        ({"task": "other-task"}, "tasks_invalid", "task"),
        ({"element": {"role": "button"}}, "elements_invalid", "element"),
    ],
)
def test_hostile_steps_are_refused(fields: dict[str, Any], reason: str, words: str) -> None:
    bad = step("click", 6_000_000_000, x=1, y=1, button="left") | fields
    with pytest.raises(SampleRefused, match=words) as info:
        build([bad])
    assert info.value.reason == reason
    if "text" in fields and isinstance(fields["text"], str):
        assert "xxxx" not in str(info.value)  # never the content


def test_huge_text_at_the_limit_is_kept_and_bounded() -> None:
    text = "\x00" * MAX_TEXT_CHARS  # repr makes 4 characters of each
    (s,) = build([step("type", 6_000_000_000, text=text)])
    assert len(s.json) < 12 * MAX_TEXT_CHARS  # each is 6 bytes in text, 5 in code
    (call,) = pc.parse(s.doc["norm"]["code"])
    assert call.kwargs["message"] == text


@pytest.mark.parametrize(
    ("frame", "image", "reason"),
    [
        (FRAME0 | {"width": 0}, None, "stream_invalid"),
        (FRAME0 | {"width": -5}, None, "stream_invalid"),
        (FRAME0 | {"left": 2**31}, None, "stream_invalid"),
        (FRAME0 | {"format": "gif"}, None, "stream_invalid"),
        (FRAME0, b"", "image_invalid"),
        (FRAME0, b"GIF89a" + b"\x00" * 40, "image_invalid"),
        (FRAME0, fake_webp(1, 1), "image_invalid"),  # 1 x 1 claiming to be 1280 x 800
        (FRAME0, fake_webp(1280, 800) + b"\x00", "image_invalid"),  # RIFF size is not the member's
        (FRAME0, fake_webp(1280, 800)[:-1], "image_invalid"),
        (FRAME0 | {"format": "png"}, fake_webp(1280, 800), "image_invalid"),
    ],
)
def test_hostile_frames_and_images_are_refused(
    frame: dict[str, Any], image: bytes | None, reason: str
) -> None:
    images = {0: image} if image is not None else {0: fake_webp(1280, 800)}
    with pytest.raises(SampleRefused) as info:
        build(frames=[frame], images=images)
    assert info.value.reason == reason


def test_png_frame_is_transcoded_only_with_a_transcoder() -> None:
    png = (
        bytes.fromhex("89504e470d0a1a0a0000000d49484452")
        + (1280).to_bytes(4, "big")
        + (800).to_bytes(4, "big")
    )
    assert png_size(png) == (1280, 800)
    frames = [FRAME0 | {"format": "png"}]
    with pytest.raises(SampleRefused, match="transcoder") as info:
        build(frames=frames, images={0: png})
    assert info.value.reason == "internal_error"
    got = list(
        samples(
            manifest(),
            known_steps(),
            tasks=[TASK],
            frames=frames,
            events=EVENTS,
            images={0: png},
            transcode=lambda d, w, h: fake_webp(w, h),
        )
    )
    assert got[0].doc["frame"]["transcoded_from"] == "png"
    assert got[0].image == fake_webp(1280, 800)


def test_missing_image_of_a_used_frame_is_refused() -> None:
    with pytest.raises(SampleRefused) as info:
        build(images={})
    assert info.value.reason == "member_missing"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"schema": "optin-bundle/0"}, "schema_unknown"),
        ({"schema": "optin-bundle/4"}, "schema_unknown"),
        ({"volunteer": {"id": "4E043FA221A4110A7FE2F061C1F25333"}}, "manifest_types"),
        ({"volunteer": None}, "manifest_types"),
        ({"consent": {"study_id": "s", "consent_version": 3}}, "manifest_types"),
        ({"agent_version": None}, "manifest_types"),
    ],
)
def test_hostile_manifests_are_refused_before_any_sample(change: dict[str, Any], reason: str) -> None:
    with pytest.raises(SampleRefused) as info:
        samples(manifest() | change, known_steps(), tasks=[TASK], frames=[FRAME0], events=EVENTS, images={})
    assert info.value.reason == reason


def test_hostile_task_lists_are_refused() -> None:
    for tasks in ([TASK, TASK], [{"id": "sign-in"}], [TASK | {"steps": {"range": [0]}}]):
        with pytest.raises(SampleRefused) as info:
            build(tasks=tasks)
        assert info.value.reason == "tasks_invalid"


def test_utc_outside_64_bits_is_refused() -> None:
    events = copy.deepcopy(EVENTS)
    events[0]["detail"] = {"mono_ns": 1_000_000_000, "wall_ns": 2**63 - 1}
    with pytest.raises(SampleRefused, match="UTC") as info:
        build(events=events)
    assert info.value.reason == "stream_invalid"


# --- time and gaps -----------------------------------------------------------------------------------


def test_no_session_start_gives_null_utc() -> None:
    s = build(events=[])[0]
    assert s.doc["utc_start_ns"] is None and s.doc["utc_end_ns"] is None


@pytest.mark.parametrize(
    ("marker_at", "marker", "gaps"),
    [
        (5_500_000_000, "pause", [True, False, False]),  # before step 0: the start of the stream counts
        (6_080_000_000, "deny", [False, True, False]),  # exactly at step 0's end: included
        (7_000_000_000, "cut", [False, True, False]),  # exactly at step 1's start: included
        (8_000_000_000, "secure_input", [False, False, True]),
        (7_050_000_000, "pause", [False, False, False]),  # inside step 1: between no two steps
        (8_000_000_000, "resume", [False, False, False]),  # not a gap marker
        (8_000_000_000, "screen_layout", [False, False, False]),
    ],
)
def test_after_gap(marker_at: int, marker: str, gaps: list[bool]) -> None:
    events = [*EVENTS, {"k": "marker", "marker": marker, "t_ns": marker_at, "v": 1, "detail": {}}]
    assert [s.doc["after_gap"] for s in build(events=events)] == gaps
