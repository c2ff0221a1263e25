@echo off
start "" "C:\Users\volunteer\optin\.venv\Scripts\pythonw.exe" -m agent run
