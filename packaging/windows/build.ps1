# Build Lockgate for Windows with PyInstaller: one folder, dist\lockgate\.
#
# NOT RUN HERE: Lockgate's machines and CI are Linux, so this script has never run in CI.
# It needs Windows 10 or 11 (x64) with Python 3.11+ from python.org or the Store (the
# `py` launcher or `python` on PATH). From the repository root, in PowerShell:
#
#   powershell -ExecutionPolicy Bypass -File packaging\windows\build.ps1 [-Dist dist] [-Work build\windows] [-Zip]
#
# The folder holds two executables over the same files:
#   lockgate.exe    a console program: the command line, `lockgate serve`, and the stdio
#                   bridge `lockgate connect NAME` that MCP clients launch with pipes
#   lockgatew.exe   the tray app with no console window: for the Start menu and login
# Put the folder somewhere lasting (for example %LOCALAPPDATA%\Programs\Lockgate), add it to
# PATH for `lockgate`, and make a Start menu shortcut to lockgatew.exe.
# -Zip also packs dist\lockgate-VERSION-windows-x64.zip.
# The executables are not signed; SmartScreen warns about unsigned downloads until they are
# (signtool sign /fd SHA256 /tr <timestamp url> /td SHA256 dist\lockgate\*.exe).

param(
    [string]$Dist = "dist",
    [string]$Work = "build\windows",
    [switch]$Zip
)
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")

function Say([string]$Message) { Write-Host "==> $Message" -ForegroundColor Cyan }
function Invoke-Checked([string]$Exe, [string[]]$Arguments) {
    & $Exe @Arguments
    if ($LASTEXITCODE -ne 0) { throw "$Exe $($Arguments -join ' ') failed with exit code $LASTEXITCODE" }
}

$Venv = if ($env:LOCKGATE_VENV) { $env:LOCKGATE_VENV } else { ".venv" }
$Py = Join-Path $Venv "Scripts\python.exe"
if (-not (Test-Path $Py)) {
    Say "creating $Venv"
    if (Get-Command py -ErrorAction SilentlyContinue) {
        Invoke-Checked "py" @("-3", "-m", "venv", $Venv)
    } else {
        Invoke-Checked "python" @("-m", "venv", $Venv)
    }
    Invoke-Checked $Py @("-m", "pip", "install", "-q", "--upgrade", "pip")
    Invoke-Checked $Py @("-m", "pip", "install", "-q", "-e", ".")
}
& $Py -c "import PyInstaller" 2>$null
if ($LASTEXITCODE -ne 0) {
    Say "installing PyInstaller into $Venv"
    Invoke-Checked $Py @("-m", "pip", "install", "-q", "pyinstaller>=6.22")
}
$Version = (& $Py -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])").Trim()

# The icon: Qt draws resources\lockgate.svg at 16 to 256 px into one .ico.
New-Item -ItemType Directory -Force -Path $Work | Out-Null
$Icon = Join-Path (Resolve-Path $Work).Path "lockgate.ico"
Invoke-Checked $Py @("packaging\icons.py", "ico", $Icon)

Say "building Lockgate $Version into $Dist\lockgate"
$env:LOCKGATE_ICON = $Icon
try {
    Invoke-Checked $Py @("-m", "PyInstaller", "--noconfirm", "--clean", "--log-level", "WARN",
        "--distpath", $Dist, "--workpath", (Join-Path $Work "pyinstaller"), "packaging\lockgate.spec")
} finally {
    Remove-Item Env:\LOCKGATE_ICON
}

$Bundle = Join-Path $Dist "lockgate"
foreach ($exe in @("lockgate.exe", "lockgatew.exe")) {
    if (-not (Test-Path (Join-Path $Bundle $exe))) { throw "the build made no $exe" }
}
Invoke-Checked (Join-Path $Bundle "lockgate.exe") @("--version")
$Size = (Get-ChildItem -Recurse -File $Bundle | Measure-Object -Property Length -Sum).Sum / 1MB
Say ("built {0} ({1:N0} MB)" -f $Bundle, $Size)

if ($Zip) {
    $Archive = Join-Path $Dist "lockgate-$Version-windows-x64.zip"
    Compress-Archive -Path $Bundle -DestinationPath $Archive -Force
    Say "packed $Archive"
}
