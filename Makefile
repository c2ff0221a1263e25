# optin — set-up and checks.  `make demo` and `make test` work on a fresh Debian/Ubuntu machine:
# they install the system packages they need (as root, via apt-get; otherwise they print the
# command), create .venv and install the package into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Debian/Ubuntu packages for the private display, the tray, the tests and the GTK tray backend
# (see docs/development.md; versions measured in shared research platform-lab).
APT_PACKAGES := xvfb xauth x11-utils x11-xserver-utils xdotool openbox trayer dunst dbus xterm age \
	fonts-dejavu-core xfonts-base tesseract-ocr tesseract-ocr-eng libgirepository1.0-dev libcairo2-dev pkg-config gir1.2-gtk-3.0 \
	gcc python3-dev python3-venv python3-tk systemd openssl shellcheck \
	gir1.2-atspi-2.0 at-spi2-core zenity gtk-3-examples
# The accessibility tests (AT-SPI): the Atspi typelib, the bus launcher, GTK 3 apps to look at.
# The browsers of the element tests (tests/display/test_a11y_browsers.py), installed where apt has
# them by these names (Debian; Ubuntu ships both as snaps): about 10 s each on this machine.
BROWSER_PACKAGES := firefox-esr chromium
REQUIRED_COMMANDS := Xvfb xauth xdpyinfo xset openbox trayer dunst dbus-daemon xdotool xterm age tesseract pkg-config gcc systemd-analyze openssl shellcheck \
	zenity gtk3-widget-factory
APT_INSTALL := apt-get install -y --no-install-recommends $(APT_PACKAGES)

# mypy --strict once for each OS optin runs on: the per-OS branches (agent/backends/platform_calls.py,
# the win32 and darwin backends) are type-checked only under their own --platform.  TYPED is
# checked as every OS, TYPED_<os> as that OS only: the display and hostile suites drive POSIX
# processes (killpg, fork, FIFOs) and run on Linux (and could on macOS), never on Windows.
MYPY_PLATFORMS := linux win32 darwin
TYPED          := agent tests/unit tests/platform tests/redaction tests/benchmarks tests/conftest.py tests/tools.py
TYPED_linux    := tests/display tests/hostile tests/study tests/soak
TYPED_win32    :=
TYPED_darwin   := tests/display tests/hostile tests/study tests/soak

.PHONY: help system-deps venv demo test lint typecheck unit bench soak fuzz run doctor package clean

help:
	@echo "make demo    the whole chain on a private virtual display (installs what it needs)"
	@echo "make test    lint, type checks and the whole test suite"
	@echo "make run     start optin on your desktop (needs an installed study: see README)"
	@echo "make bench   benchmarks (not part of make test)"
	@echo "make soak    one hour (SOAK_MINUTES) of scripted work with the real agent, sampled; fails on growth (not part of make test)"
	@echo "make fuzz    the hostile-input suite with long randomised rounds (not part of make test)"
	@echo "make package the one-folder app in dist/optin (PyInstaller)"
	@echo "make clean   remove .venv and caches"

system-deps:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null || { \
		echo "optin needs Python 3.10 or newer as '$(PYTHON)'. Fix: install it, or run make PYTHON=python3.11 ..."; \
		exit 1; }
	@missing=""; \
	for c in $(REQUIRED_COMMANDS); do command -v $$c >/dev/null 2>&1 || missing="$$missing $$c"; done; \
	pkg-config --exists gobject-introspection-1.0 cairo 2>/dev/null || missing="$$missing gir/cairo-dev"; \
	ls /usr/lib/*/girepository-1.0/Gtk-3.0.typelib >/dev/null 2>&1 || missing="$$missing gtk3-typelib"; \
	ls /usr/lib/*/girepository-1.0/Atspi-2.0.typelib >/dev/null 2>&1 || missing="$$missing atspi-typelib"; \
	test -x /usr/libexec/at-spi-bus-launcher || missing="$$missing at-spi2-core"; \
	ls /usr/share/fonts/X11/misc/*.pcf.gz >/dev/null 2>&1 || missing="$$missing xfonts-base"; \
	$(PYTHON) -c 'import venv, ensurepip' 2>/dev/null || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import tkinter' 2>/dev/null || missing="$$missing python3-tk"; \
	$(PYTHON) -c 'import os, sysconfig; assert os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
		2>/dev/null || missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing system packages (missing:$$missing)"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(APT_INSTALL) -qq >/dev/null || exit 1; \
		else \
			echo "optin needs these system packages (missing:$$missing). Run:"; \
			echo "  sudo apt-get update && sudo $(APT_INSTALL)"; \
			echo "then run make again."; \
			exit 1; \
		fi; \
	fi
	@browsers=""; \
	for p in $(BROWSER_PACKAGES); do command -v $$p >/dev/null 2>&1 || browsers="$$browsers $$p"; done; \
	if [ -n "$$browsers" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			for p in $$browsers; do \
				if apt-cache show $$p >/dev/null 2>&1; then \
					echo "installing $$p (the browser element tests)"; \
					DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends -qq $$p >/dev/null || exit 1; \
				else \
					echo "note: apt has no $$p here; the browser element tests will say so"; \
				fi; \
			done; \
		else \
			echo "note: the browser element tests need$$browsers: sudo apt-get install$$browsers"; \
		fi; \
	fi

# system-deps is order-only: it must run first, but a venv is not rebuilt because of it.
$(STAMP): pyproject.toml | system-deps
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[test,gtk,study,study-test]"
	@touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/optin demo

run: venv
	$(BIN)/optin run

package: venv
	$(BIN)/pyinstaller --noconfirm --log-level WARN --distpath dist --workpath build packaging/pyinstaller/optin.spec
	dist/optin/optin --version
	@echo "the app is dist/optin/ (run dist/optin/optin doctor, dist/optin/optin demo)"

doctor: venv
	$(BIN)/optin doctor

lint: venv typecheck
	$(BIN)/ruff check agent tests
	$(BIN)/ruff format --check agent tests
	$(BIN)/actionlint .github/workflows/*.yml  # checks run: scripts with shellcheck (system-deps)

# Each platform keeps its own cache (one shared cache would be rebuilt at every switch); all three
# run, and the target fails if any of them found an error.
typecheck: venv
	@status=0; $(foreach os,$(MYPY_PLATFORMS), \
		echo "mypy --strict --platform $(os) $(strip $(TYPED) $(TYPED_$(os)))"; \
		$(BIN)/mypy --strict --platform $(os) --cache-dir .mypy_cache/$(os) $(TYPED) $(TYPED_$(os)) || status=1;) \
	exit $$status

unit: venv
	$(BIN)/python -m pytest -q tests/unit

test: lint
	$(BIN)/python -m pytest -q

# The hostile-input suite runs its fast rounds in make test; here each randomised case runs
# FUZZ_ROUNDS rounds (tests/hostile/conftest.py prints tried / held by promise).
FUZZ_ROUNDS ?= 2000
fuzz: venv
	OPTIN_FUZZ_ROUNDS=$(FUZZ_ROUNDS) $(BIN)/python -m pytest -q tests/hostile

bench: venv
	$(BIN)/python -m tests.benchmarks
	$(BIN)/python -m tests.benchmarks.redaction
	$(BIN)/python -m tests.benchmarks.export
	$(BIN)/python -m tests.benchmarks.frame_encodings --no-ocr
	$(BIN)/python -m tests.benchmarks.echo_off
	$(BIN)/python -m tests.benchmarks.a11y
	$(BIN)/python -m tests.benchmarks.dataset
	$(BIN)/python -m tests.benchmarks.regions
	$(BIN)/python -m tests.benchmarks.export_memory
	$(BIN)/python -m tests.benchmarks.ocr_pool
	$(BIN)/python -m tests.benchmarks.export_hour
	$(BIN)/python -m tests.benchmarks.screen_idle
	$(BIN)/python -m tests.benchmarks.upload
	$(BIN)/python -m tests.benchmarks.agent_memory

# The soak (issue 18): the real agent on a private display for SOAK_MINUTES of scripted work, sampled
# every few seconds; CSV, PNGs and a summary in docs/soak/; fails when memory, threads, open files or
# idle CPU grow, the queue does not drain, or anything is lost (see docs/performance.md, "Soak").
SOAK_MINUTES ?= 60
soak: venv
	SOAK_MINUTES=$(SOAK_MINUTES) $(BIN)/python -m tests.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
