; Inno Setup script for the Windows installer: a per-user install, no administrator rights.
;
;   iscc installers\windows\desktop_proxy.iss
;
; Needs Inno Setup 6.3 or later and the PyInstaller output in dist\desktop-proxy (build.spec).
; Writes dist\desktop-proxy-<version>-windows-x64-setup.exe. The version comes from the
; executable's version info, which build.spec fills from desktop_proxy\_version.py
; (override with /DAppVersion=1.2.3).
;
; Optional code signing (the executables, the installer and the uninstaller): name a sign tool
; on the command line, e.g.
;   iscc "/Ssigntool=signtool.exe sign /fd sha256 /td sha256 /tr http://timestamp.digicert.com /f cert.pfx /p $p $f" ^
;        /DSignTool=signtool installers\windows\desktop_proxy.iss
; See installers\README.md.

#define AppName "Desktop Proxy"
#define AppExe "DesktopProxy.exe"
#define CliExe "desktop-proxy.exe"
#define RootDir AddBackslash(SourcePath) + "..\.."
#define DistDir RootDir + "\dist\desktop-proxy"
#ifndef AppVersion
  #define AppVersion GetStringFileInfo(DistDir + "\" + AppExe, "ProductVersion")
#endif
#if AppVersion == ""
  #error No version in dist\desktop-proxy\DesktopProxy.exe: run pyinstaller --noconfirm build.spec first.
#endif
; build.spec writes the .ico there (installers/app_icons.py).
#define IconFile RootDir + "\build\icons\desktop-proxy.ico"
; The same Run value the tray app's "Start at login" writes (desktop_proxy/launch/autostart.py),
; so the menu item and this task agree.
#define RunKey "Software\Microsoft\Windows\CurrentVersion\Run"
#define RunValue "desktop-proxy"
#ifdef SignTool
  #define SignFlag " signonce"
#else
  #define SignFlag ""
#endif

[Setup]
; Never change AppId: upgrades and the uninstaller find earlier installs by it.
AppId={{E41052A9-7717-4A91-AA32-5DA7EF50F10D}
AppName={#AppName}
AppVersion={#AppVersion}
AppPublisher=desktop-proxy
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=lowest
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
; Qt 6 needs Windows 10.
MinVersion=10.0
WizardStyle=modern
Compression=lzma2/max
SolidCompression=yes
OutputDir={#RootDir}\dist
OutputBaseFilename=desktop-proxy-{#AppVersion}-windows-x64-setup
UninstallDisplayName={#AppName}
UninstallDisplayIcon={app}\{#AppExe}
; Close a running tray app (Restart Manager) before replacing or removing its files.
CloseApplications=yes
RestartApplications=no
#if FileExists(IconFile)
SetupIconFile={#IconFile}
#endif
#ifdef SignTool
SignTool={#SignTool}
SignedUninstaller=yes
#endif

[Tasks]
Name: "startatlogin"; Description: "Start {#AppName} when I sign in"; Flags: unchecked

[InstallDelete]
; An earlier version's libraries must not mix with this one's.
Type: filesandordirs; Name: "{app}\_internal"

[Files]
Source: "{#DistDir}\{#AppExe}"; DestDir: "{app}"; Flags: ignoreversion{#SignFlag}
Source: "{#DistDir}\{#CliExe}"; DestDir: "{app}"; Flags: ignoreversion{#SignFlag}
Source: "{#DistDir}\*"; Excludes: "\{#AppExe},\{#CliExe}"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\{#AppExe}"

[Registry]
Root: HKCU; Subkey: "{#RunKey}"; ValueType: string; ValueName: "{#RunValue}"; ValueData: """{app}\{#AppExe}"""; Flags: uninsdeletevalue; Tasks: startatlogin

[Run]
Filename: "{app}\{#AppExe}"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[Code]
procedure CurUninstallStepChanged(CurUninstallStep: TUninstallStep);
var
  ResultCode: Integer;
begin
  if CurUninstallStep = usUninstall then
  begin
    // After the user confirmed, before files are removed: stop the tray app (and a CLI
    // `serve`) so their files are not in use. CloseApplications only covers Setup.
    Exec(ExpandConstant('{sys}\taskkill.exe'), '/f /im {#AppExe} /im {#CliExe}', '', SW_HIDE,
      ewWaitUntilTerminated, ResultCode);
    // The entry may come from the app's own "Start at login" as well as from the task.
    RegDeleteValue(HKEY_CURRENT_USER, '{#RunKey}', '{#RunValue}');
  end;
end;
