# iis-clientcert agent: runs batches of contract ops (iis_clientcert/host/contract.py) on an
# IIS host.
#
# Started by the constant bootstrap (contract.BOOTSTRAP), which hands it the stdin reader.
# It reads request frames ("iis-clientcert-request <id> <json>", one per line) until stdin
# ends and answers each with one result frame ("iis-clientcert-result <id> <json>") on
# stdout: one request for a one-shot command, many for the persistent agent a client keeps
# per host (powershell.exe, the agent and its compiled types are loaded once). Values,
# secrets included, only ever arrive here as JSON data: nothing in this script is built
# from them, and nothing here writes them anywhere (no command line, no log, no output).
#
# Windows Server 2016-2025 with IIS 10, under Windows PowerShell 5.1 (powershell.exe, .NET
# Framework) or PowerShell 7 (pwsh.exe, .NET): connection.shell chooses. Code that only one
# edition can run sits in `if ($script:IsDesktop) { 5.1 } else { 7 }` blocks, and nowhere
# else (the tests and the simulator check this). Microsoft.Web.Administration is loaded
# directly: importing the WebAdministration module costs seconds per command.
param([System.IO.TextReader]$Reader)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

# PSEdition is 'Desktop' in 5.1 and 'Core' in 7 ($IsCoreCLR does not exist in 5.1).
$script:IsDesktop = ($PSVersionTable.PSEdition -ne 'Core')

$script:ApphostPath = Join-Path $env:windir 'system32\inetsrv\config\applicationHost.config'
$script:IisAppId = '{4dc3e181-e14b-4a21-b022-59fc669b0914}'
$script:SchannelKey = 'SYSTEM\CurrentControlSet\Control\SecurityProviders\SCHANNEL'
$script:HttpParamsKey = 'SYSTEM\CurrentControlSet\Services\HTTP\Parameters'
$script:Secrets = New-Object 'System.Collections.Generic.List[string]'
$script:MwaLoadError = $null
try {
    [void][System.Reflection.Assembly]::LoadFrom("$env:windir\system32\inetsrv\Microsoft.Web.Administration.dll")
} catch {
    $script:MwaLoadError = $_.Exception.Message
}

# --- errors ------------------------------------------------------------------------------

function New-AgentError([string]$Code, [string]$Message, $HResult = $null) {
    $ex = New-Object System.InvalidOperationException($Message)
    $ex.Data['AgentCode'] = $Code
    if ($null -ne $HResult) { $ex.Data['AgentHResult'] = ConvertTo-HResult32 $HResult }
    return $ex
}

function ConvertTo-HResult32($HResult) {
    # HRESULTs as signed 32-bit values, as .NET reports them and as PowerShell reads hex
    # literals such as 0x80070021.
    $v = [int64]$HResult
    if ($v -gt 2147483647) { $v -= 4294967296 }
    return [int32]$v
}

function Format-HResult($HResult) {
    if ($null -eq $HResult) { return $null }
    return ('0x{0:X8}' -f (ConvertTo-HResult32 $HResult))
}

function Get-InnermostException($Exception) {
    # PowerShell wraps .NET and COM errors ("Exception calling X with N argument(s)").
    $e = $Exception
    while ($null -ne $e.InnerException -and -not $e.Data.Contains('AgentCode') -and (
            $e -is [System.Management.Automation.MethodInvocationException] -or
            $e -is [System.Reflection.TargetInvocationException] -or
            $e -is [System.Management.Automation.RuntimeException] -or
            $e -is [System.Management.Automation.SetValueInvocationException])) {
        $e = $e.InnerException
    }
    return $e
}

# HRESULT -> contract error kind: a copy of contract.HRESULT_KINDS (a test keeps them equal).
$script:HResultKinds = @{
    '0x80070021' = 'Locked'
    '0x80070005' = 'AccessDenied'
    '0x8007052E' = 'LogonFailure'
    '0x80070057' = 'InvalidValue'
    '0x8007000D' = 'InvalidValue'
    '0x80070002' = 'NotFound'
    '0x80070003' = 'NotFound'
    '0x80070490' = 'NotFound'
    '0x800708AC' = 'NotFound'
    '0x800708AD' = 'NotFound'
    '0x80070534' = 'NotFound'
    '0x8007056B' = 'NotFound'
    '0x80092004' = 'NotFound'
    '0x80070035' = 'NotFound'
    '0x800700B7' = 'DuplicateKey'
    '0x800708B0' = 'DuplicateKey'
    '0x80070562' = 'DuplicateKey'
    '0x800708B7' = 'DuplicateKey'
    '0x800708C5' = 'PolicyViolation'
    '0x800708C4' = 'PolicyViolation'
    '0x8007052D' = 'PolicyViolation'
    '0x8007089A' = 'PolicyViolation'
    '0x80070523' = 'PolicyViolation'
    '0x80093102' = 'BadCertificate'
    '0x8009310B' = 'BadCertificate'
    '0x80092002' = 'BadCertificate'
    '0x80070056' = 'BadCertificate'
    '0x80092009' = 'BadCertificate'
    '0x8009200D' = 'BadCertificate'
    '0x80070520' = 'BadCertificate'
    '0x800703EE' = 'Conflict'
    '0x80070020' = 'Conflict'
}

function Get-CodeForHResult($HResult) {
    $key = Format-HResult $HResult
    if ($script:HResultKinds.ContainsKey($key)) { return $script:HResultKinds[$key] }
    return 'Fault'
}

# contract.WITHHELD_MESSAGE (a unit test keeps them equal).
$script:WithheldMessage = 'the message was withheld: it contains a value as short as a secret of this request (1 to 3 characters), which cannot be masked in it; the error code and HRESULT stand'

function Add-Secret($Value) {
    # Every secret of the request and every password this process decrypts, whatever its
    # length (a one-character password is as secret as a long one).
    if ($Value -is [string] -and $Value.Length -gt 0 -and -not $script:Secrets.Contains($Value)) { $script:Secrets.Add($Value) }
}

function Hide-Secrets([string]$Text) {
    # Secrets of 4 characters or more become REDACTED, longest first. A shorter one cannot
    # be masked (replacing every "a" makes the text unreadable and still tells where it
    # was): a message that holds one is withheld whole, as contract.scrub does.
    if ($null -eq $Text) { return '' }
    $probe = $Text
    $short = New-Object 'System.Collections.Generic.List[string]'
    foreach ($s in @($script:Secrets | Sort-Object -Property Length -Descending)) {
        if ([string]::IsNullOrEmpty($s)) { continue }
        if ($s.Length -ge 4) {
            $Text = $Text.Replace($s, 'REDACTED')
            $probe = $probe.Replace($s, '')
        } else {
            $short.Add($s)
        }
    }
    foreach ($s in $short) {
        if ($probe.IndexOf($s, [System.StringComparison]::Ordinal) -ge 0) { return $script:WithheldMessage }
    }
    return $Text
}

function Test-DictKey($Dictionary, [string]$Key) {
    # Works for Hashtable, [ordered] and the JSON serializer's Dictionary alike (PowerShell
    # 5.1 cannot call the explicit IDictionary.Contains of a generic Dictionary).
    if ($Dictionary -isnot [System.Collections.IDictionary]) { return $false }
    foreach ($k in $Dictionary.Keys) { if ([string]$k -ceq $Key) { return $true } }
    return $false
}

function Add-ElementSecrets($Element, $List) {
    if ($Element -isnot [System.Collections.IDictionary]) { return }
    if ((Test-DictKey $Element 'attributes') -and $Element['attributes'] -is [System.Collections.IDictionary]) {
        foreach ($k in @($Element['attributes'].Keys)) {
            $v = $Element['attributes'][$k]
            if ($k -like '*password*' -and $v -is [string] -and $v.Length -gt 0) { $List.Add($v) }
        }
    }
    if ((Test-DictKey $Element 'children') -and $Element['children'] -is [System.Collections.IDictionary]) {
        foreach ($c in @($Element['children'].Values)) { Add-ElementSecrets $c $List }
    }
    if ((Test-DictKey $Element 'items') -and $null -ne $Element['items']) {
        foreach ($i in @($Element['items'])) { Add-ElementSecrets $i $List }
    }
}

# --- JSON --------------------------------------------------------------------------------
# Our own reader and writer, the same on both editions: 5.1 has no JavaScriptSerializer-free
# reader that gives dictionaries (ConvertFrom-Json has no -AsHashtable there), 7 has no
# System.Web.Extensions, 7's ConvertFrom-Json turns date-like strings into DateTime, and
# ConvertTo-Json in 5.1 flattens one-element arrays and truncates depth.

class AgentJson {
    # Objects become Dictionary[string,object] with ordinal keys (JSON keys are case
    # sensitive), arrays object[], numbers long (or double), strings stay strings.
    hidden [string]$Text
    hidden [int]$Pos
    static hidden [char[]]$Stops = [char[]]@(34, 92)
    static hidden [char[]]$Escapes = [char[]]((0..31) + 34 + 92)
    static hidden [regex]$Number = [regex]::new('\G-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?')

    AgentJson([string]$Text) {
        $this.Text = $Text
        $this.Pos = 0
    }

    static [object] Parse([string]$Text) {
        $reader = [AgentJson]::new($Text)
        $value = $reader.ReadValue(0)
        $reader.SkipSpace()
        if ($reader.Pos -lt $Text.Length) { throw "unexpected text at offset $($reader.Pos)" }
        return $value
    }

    static [string] Quote([string]$Value) {
        if ($null -eq $Value) { return '""' }
        if ($Value.IndexOfAny([AgentJson]::Escapes) -lt 0) { return '"' + $Value + '"' }
        $sb = [System.Text.StringBuilder]::new($Value.Length + 16)
        [void]$sb.Append('"')
        foreach ($c in $Value.ToCharArray()) {
            $code = [int]$c
            if ($code -eq 34) { [void]$sb.Append('\"') }
            elseif ($code -eq 92) { [void]$sb.Append('\\') }
            elseif ($code -lt 32) { [void]$sb.Append('\u').Append($code.ToString('x4')) }
            else { [void]$sb.Append($c) }
        }
        [void]$sb.Append('"')
        return $sb.ToString()
    }

    hidden [void] SkipSpace() {
        while ($this.Pos -lt $this.Text.Length) {
            $code = [int]$this.Text[$this.Pos]
            if ($code -ne 32 -and $code -ne 9 -and $code -ne 10 -and $code -ne 13) { return }
            $this.Pos++
        }
    }

    hidden [int] Peek() {
        if ($this.Pos -ge $this.Text.Length) { return -1 }
        return [int]$this.Text[$this.Pos]
    }

    hidden [void] Expect([int]$Code) {
        $this.SkipSpace()
        if ($this.Peek() -ne $Code) { throw "expected '$([char]$Code)' at offset $($this.Pos)" }
        $this.Pos++
    }

    hidden [bool] Accept([string]$Word) {
        if ([string]::CompareOrdinal($this.Text, $this.Pos, $Word, 0, $Word.Length) -ne 0) { return $false }
        $this.Pos += $Word.Length
        return $true
    }

    hidden [object] ReadValue([int]$Depth) {
        if ($Depth -gt 64) { throw 'JSON nested too deep' }
        $this.SkipSpace()
        $c = $this.Peek()
        if ($c -eq 123) { return $this.ReadObject($Depth) }
        if ($c -eq 91) { return $this.ReadArray($Depth) }
        if ($c -eq 34) { return $this.ReadString() }
        if ($this.Accept('true')) { return $true }
        if ($this.Accept('false')) { return $false }
        if ($this.Accept('null')) { return $null }
        $m = [AgentJson]::Number.Match($this.Text, $this.Pos)
        if (-not $m.Success) { throw "unexpected character at offset $($this.Pos)" }
        $this.Pos += $m.Length
        $n = 0L
        $culture = [System.Globalization.CultureInfo]::InvariantCulture
        if ($m.Value.IndexOfAny([char[]]@(46, 69, 101)) -lt 0 -and
            [long]::TryParse($m.Value, [System.Globalization.NumberStyles]::AllowLeadingSign, $culture, [ref]$n)) {
            return $n
        }
        return [double]::Parse($m.Value, $culture)
    }

    hidden [object] ReadObject([int]$Depth) {
        $this.Pos++
        $result = [System.Collections.Generic.Dictionary[string, object]]::new([System.StringComparer]::Ordinal)
        $this.SkipSpace()
        if ($this.Peek() -eq 125) { $this.Pos++; return $result }
        while ($true) {
            $this.SkipSpace()
            if ($this.Peek() -ne 34) { throw "expected a key at offset $($this.Pos)" }
            $key = $this.ReadString()
            $this.Expect(58)
            $result[$key] = $this.ReadValue($Depth + 1)
            $this.SkipSpace()
            $c = $this.Peek()
            $this.Pos++
            if ($c -eq 125) { return $result }
            if ($c -ne 44) { throw "expected ',' or '}' at offset $($this.Pos - 1)" }
        }
        throw 'unreachable'
    }

    hidden [object] ReadArray([int]$Depth) {
        $this.Pos++
        $items = [System.Collections.Generic.List[object]]::new()
        $this.SkipSpace()
        if ($this.Peek() -eq 93) { $this.Pos++; return $items.ToArray() }
        while ($true) {
            $items.Add($this.ReadValue($Depth + 1))
            $this.SkipSpace()
            $c = $this.Peek()
            $this.Pos++
            if ($c -eq 93) { return $items.ToArray() }
            if ($c -ne 44) { throw "expected ',' or ']' at offset $($this.Pos - 1)" }
        }
        throw 'unreachable'
    }

    hidden [string] ReadString() {
        $this.Pos++
        $sb = [System.Text.StringBuilder]::new()
        while ($true) {
            $next = $this.Text.IndexOfAny([AgentJson]::Stops, $this.Pos)
            if ($next -lt 0) { throw 'unterminated string' }
            [void]$sb.Append($this.Text, $this.Pos, $next - $this.Pos)
            $this.Pos = $next + 1
            if ([int]$this.Text[$next] -eq 34) { return $sb.ToString() }
            if ($this.Pos -ge $this.Text.Length) { throw 'unterminated string' }
            $e = [int]$this.Text[$this.Pos]
            $this.Pos++
            if ($e -eq 34 -or $e -eq 92 -or $e -eq 47) { [void]$sb.Append([char]$e) }
            elseif ($e -eq 98) { [void]$sb.Append([char]8) }
            elseif ($e -eq 102) { [void]$sb.Append([char]12) }
            elseif ($e -eq 110) { [void]$sb.Append([char]10) }
            elseif ($e -eq 114) { [void]$sb.Append([char]13) }
            elseif ($e -eq 116) { [void]$sb.Append([char]9) }
            elseif ($e -eq 117) {
                $hex = $this.Text.Substring($this.Pos, 4)
                [void]$sb.Append([char][System.Convert]::ToUInt16($hex, 16))
                $this.Pos += 4
            } else {
                throw "bad escape at offset $($this.Pos - 2)"
            }
        }
        throw 'unreachable'
    }
}

function Write-JsonValue([System.Text.StringBuilder]$Sb, $Value, [int]$Depth = 0) {
    # A depth limit turns a value that contains itself into an error the caller can catch
    # (unbounded recursion would end the process with no output at all).
    if ($Depth -gt 64) { throw 'the result is nested too deep to write as JSON' }
    if ($null -eq $Value) { [void]$Sb.Append('null'); return }
    $v = $Value.PSObject.BaseObject
    if ($v -is [bool]) {
        if ($v) { [void]$Sb.Append('true') } else { [void]$Sb.Append('false') }
        return
    }
    if ($v -is [string] -or $v -is [char] -or $v -is [guid] -or $v -is [enum]) {
        [void]$Sb.Append([AgentJson]::Quote([string]$v))
        return
    }
    if ($v -is [int] -or $v -is [long] -or $v -is [uint32] -or $v -is [uint64] -or
        $v -is [int16] -or $v -is [uint16] -or $v -is [byte] -or $v -is [sbyte] -or $v -is [decimal]) {
        [void]$Sb.Append([System.Convert]::ToString($v, [System.Globalization.CultureInfo]::InvariantCulture))
        return
    }
    if ($v -is [double] -or $v -is [single]) {
        [void]$Sb.Append(([double]$v).ToString('R', [System.Globalization.CultureInfo]::InvariantCulture))
        return
    }
    if ($v -is [datetime]) {
        $text = $v.ToUniversalTime().ToString("yyyy-MM-dd'T'HH:mm:ss'Z'", [System.Globalization.CultureInfo]::InvariantCulture)
        [void]$Sb.Append('"').Append($text).Append('"')
        return
    }
    if ($v -is [System.Collections.IDictionary]) {
        [void]$Sb.Append('{')
        $first = $true
        foreach ($key in @($v.Keys)) {
            if (-not $first) { [void]$Sb.Append(',') }
            $first = $false
            [void]$Sb.Append([AgentJson]::Quote([string]$key)).Append(':')
            Write-JsonValue $Sb $v[$key] ($Depth + 1)
        }
        [void]$Sb.Append('}')
        return
    }
    if ($v -is [System.Collections.IEnumerable]) {
        [void]$Sb.Append('[')
        $first = $true
        foreach ($item in $v) {
            if (-not $first) { [void]$Sb.Append(',') }
            $first = $false
            Write-JsonValue $Sb $item ($Depth + 1)
        }
        [void]$Sb.Append(']')
        return
    }
    [void]$Sb.Append([AgentJson]::Quote([string]$v))
}

# The last resort of ConvertTo-ResponseText: a contract error result as a constant (a unit
# test parses it with contract.parse_result).
$script:UnwritableResponse = '{"ok":false,"results":[],"error":{"op":null,"index":null,"code":"Fault","hresult":null,"message":"the agent could not write its result as JSON"}}'

function ConvertTo-ResponseText($Response) {
    # The response as JSON text, and always a contract result: when the response cannot be
    # written (a value the writer cannot render, one that contains itself), an error result
    # that says so, built afresh; when even that fails, a constant. Never a raw exception on
    # stderr, which the client can only report as "no contract result".
    $problem = 'no response'
    if ($null -ne $Response) {
        try {
            $sb = New-Object System.Text.StringBuilder
            Write-JsonValue $sb $Response
            return $sb.ToString()
        } catch {
            $problem = [string]$_.Exception.GetType().Name
        }
    }
    try {
        # The ops' results cannot be shown; those that wrote converge on the next run.
        $message = "the agent could not write its result as JSON ($problem); the ops of this request may have run"
        $sb = New-Object System.Text.StringBuilder
        Write-JsonValue $sb (New-ErrorResponse $null $null 'Fault' $message $null @())
        return $sb.ToString()
    } catch {
        return $script:UnwritableResponse
    }
}

function Write-AgentOutput([string]$Id, $Response) {
    # One line per result (the JSON writer escapes every control character), and always a
    # contract result (ConvertTo-ResponseText). Raw UTF-8 bytes: independent of the console
    # code page of the WinRM shell. Flushed at once, so a client waiting on this process gets
    # the answer while the process lives on.
    $text = 'iis-clientcert-result ' + $Id + ' ' + (ConvertTo-ResponseText $Response) + [char]10
    $bytes = $script:Utf8.GetBytes($text)
    $stdout = [Console]::OpenStandardOutput()
    $stdout.Write($bytes, 0, $bytes.Length)
    $stdout.Flush()
}

function New-List { return , (New-Object System.Collections.ArrayList) }

# --- arguments ---------------------------------------------------------------------------

function Get-Arg($A, [string]$Name, $Default = $null) {
    if ($null -ne $A -and $A.ContainsKey($Name) -and $null -ne $A[$Name]) { return $A[$Name] }
    return $Default
}

function Get-RequiredArg($A, [string]$Name) {
    if ($null -eq $A -or -not $A.ContainsKey($Name) -or $null -eq $A[$Name]) {
        throw (New-AgentError 'BadRequest' "missing argument '$Name'")
    }
    return $A[$Name]
}

function Get-RequiredString($A, [string]$Name) {
    $v = Get-RequiredArg $A $Name
    if ($v -isnot [string]) { throw (New-AgentError 'BadRequest' "argument '$Name' must be a string") }
    return $v
}

# --- registry ----------------------------------------------------------------------------

function Get-RegValue([string]$SubKey, [string]$Name, $Default = $null) {
    $key = [Microsoft.Win32.Registry]::LocalMachine.OpenSubKey($SubKey)
    if ($null -eq $key) { return $Default }
    try {
        $value = $key.GetValue($Name, $null)
        if ($null -eq $value) { return $Default }
        return , $value
    } finally {
        $key.Close()
    }
}

# --- IIS configuration -------------------------------------------------------------------

function New-ServerManager {
    if ($null -ne $script:MwaLoadError) {
        throw (New-AgentError 'FeatureMissing' 'IIS (Microsoft.Web.Administration) is not installed on this host' 0x80070002)
    }
    return (New-Object Microsoft.Web.Administration.ServerManager)
}

function Get-SiteOrFail($Sm, [string]$Name) {
    $site = $Sm.Sites[$Name]
    if ($null -eq $site) { throw (New-AgentError 'NotFound' "site '$Name' does not exist" 0x80070490) }
    return $site
}

function Assert-LocationSite($Sm, [string]$Location) {
    $loc = $Location.Trim('/')
    if ($loc -eq '') { return }
    $siteName = $loc.Split('/')[0]
    [void](Get-SiteOrFail $Sm $siteName)
}

function Test-EncryptedForm([string]$Value) {
    return ($null -ne $Value -and $Value -match '^\[enc:[A-Za-z0-9]+:[^:\]]*:enc\]$')
}

function Get-ApphostPath {
    # Where applicationHost.config is, as IIS's configuration system says: Shared
    # Configuration moves it (redirection.config, configurationRedirection@path, often a
    # UNC share), and %windir%\system32\inetsrv\config then holds a stale copy or none.
    $sm = New-ServerManager
    try {
        $redirection = $sm.GetRedirectionConfiguration().GetSection('configurationRedirection')
        if ([bool]$redirection.GetAttributeValue('enabled')) {
            $folder = [Environment]::ExpandEnvironmentVariables([string]$redirection.GetAttributeValue('path'))
            if ($folder -ne '') { return (Join-Path $folder 'applicationHost.config') }
        }
    } finally {
        $sm.Dispose()
    }
    return $script:ApphostPath
}

function Get-ApphostXml([string]$Path = '') {
    # The raw XML of a configuration file (applicationHost.config unless a path is given):
    # what is written at a location, and ciphertexts that the API would decrypt.
    if ($Path -eq '') { $Path = Get-ApphostPath }
    $doc = New-Object System.Xml.XmlDocument
    try {
        $doc.Load($Path)
    } catch {
        $inner = Get-InnermostException $_.Exception
        if ($Path.StartsWith('\\', [System.StringComparison]::Ordinal) -and $inner -is [System.UnauthorizedAccessException]) {
            # IIS reads a shared configuration with the credentials of redirection.config; a
            # WinRM logon (NTLM, or Kerberos without delegation) has none for the share.
            throw (New-AgentError 'AccessDenied' "$Path (IIS Shared Configuration) cannot be read by this WinRM logon: a second hop to the share needs delegated credentials (CredSSP, or Kerberos with delegation), or run against the host that holds the files" 0x80070005)
        }
        throw
    }
    return , $doc
}

function Get-ConfigSourceXml($Doc, $Node) {
    # A section with configSource="file" keeps its content in that file, next to the file
    # that names it (IIS and .NET's configSource rule): the file's root is the section.
    $source = $Node.GetAttribute('configSource')
    $folder = [System.IO.Path]::GetDirectoryName(([uri]$Doc.BaseURI).LocalPath)
    $inner = Get-ApphostXml ([System.IO.Path]::Combine($folder, $source))
    return , $inner.DocumentElement
}

function Get-ChildXml($Node, [string]$Name) {
    foreach ($child in $Node.ChildNodes) {
        if ($child.NodeType -eq [System.Xml.XmlNodeType]::Element -and $child.LocalName -eq $Name) { return , $child }
    }
    return $null
}

function Get-RawSection($Doc, [string]$Section, [string]$Location) {
    # The section element written at exactly this location (not inherited), or $null.
    $loc = $Location.Trim('/')
    $containers = New-List
    if ($loc -eq '') { [void]$containers.Add($Doc.DocumentElement) }
    foreach ($node in $Doc.DocumentElement.ChildNodes) {
        if ($node.NodeType -ne [System.Xml.XmlNodeType]::Element -or $node.LocalName -ne 'location') { continue }
        $path = $node.GetAttribute('path').Trim('/')
        if ($path -eq '.') { $path = '' }
        if ([string]::Equals($path, $loc, [System.StringComparison]::OrdinalIgnoreCase)) { [void]$containers.Add($node) }
    }
    foreach ($container in $containers) {
        $current = $container
        foreach ($part in $Section.Split('/')) {
            $current = Get-ChildXml $current $part
            if ($null -eq $current) { break }
        }
        if ($null -ne $current -and $current.HasAttribute('configSource')) { return , (Get-ConfigSourceXml $Doc $current) }
        if ($null -ne $current) { return , $current }
    }
    return $null
}

function Get-LocationChain([string]$Location) {
    # Nearest first: "Site/app" -> "Site/app", "Site", "".
    $chain = New-List
    $loc = $Location.Trim('/')
    while ($loc -ne '') {
        [void]$chain.Add($loc)
        $cut = $loc.LastIndexOf('/', [System.StringComparison]::Ordinal)
        if ($cut -lt 0) { $loc = '' } else { $loc = $loc.Substring(0, $cut) }
    }
    [void]$chain.Add('')
    return , $chain
}

function Get-AttrSchema($Schema, [string]$Name) {
    if ($null -eq $Schema) { return $null }
    foreach ($s in $Schema.AttributeSchemas) { if ($s.Name -eq $Name) { return $s } }
    return $null
}

function Get-ChildSchema($Schema, [string]$Name) {
    if ($null -eq $Schema) { return $null }
    foreach ($s in $Schema.ChildElementSchemas) { if ($s.Name -eq $Name) { return $s } }
    return $null
}

function Get-CollectionNames($Schema) {
    # add/clear/remove element names of a collection element (IIS's defaults without schema).
    $names = @{ add = @('add'); clear = 'clear'; remove = 'remove'; isCollection = $false }
    if ($null -eq $Schema) { return $names }
    $coll = $Schema.CollectionSchema
    if ($null -eq $coll) { return $names }
    $names.isCollection = $true
    $names.add = @(([string]$coll.AddElementNames).Split(',') | ForEach-Object { $_.Trim() } | Where-Object { $_ -ne '' })
    $names.clear = [string]$coll.ClearElementName
    $names.remove = [string]$coll.RemoveElementName
    return $names
}

function New-Element {
    return [ordered]@{ attributes = [ordered]@{}; children = [ordered]@{}; items = (New-List); clear = $false }
}

function ConvertFrom-RawXml($Xml, $Schema) {
    # An Element from XML at one location: attribute values exactly as the file holds them.
    $element = New-Element
    foreach ($attr in $Xml.Attributes) {
        if ($attr.Name -like 'xmlns*') { continue }
        $value = $attr.Value
        $attrSchema = Get-AttrSchema $Schema $attr.Name
        if ($null -ne $attrSchema -and $attrSchema.IsEncrypted -and $value -ne '' -and -not (Test-EncryptedForm $value)) {
            # Someone wrote a password in plain text into the file: never hand it out.
            $value = '[enc:Unencrypted::enc]'
        }
        $element.attributes[$attr.Name] = $value
    }
    $names = Get-CollectionNames $Schema
    foreach ($child in $Xml.ChildNodes) {
        if ($child.NodeType -ne [System.Xml.XmlNodeType]::Element) { continue }
        $name = $child.LocalName
        if (($names.isCollection -or $null -eq $Schema) -and $name -eq $names.clear) {
            $element.clear = $true
            $element.items.Clear()
            continue
        }
        if (($names.isCollection -or $null -eq $Schema) -and $names.add -contains $name) {
            $itemSchema = $null
            if ($names.isCollection) { $itemSchema = $Schema.CollectionSchema.GetAddElementSchema($name) }
            [void]$element.items.Add((ConvertFrom-RawXml $child $itemSchema))
            continue
        }
        if (($names.isCollection -or $null -eq $Schema) -and $name -eq $names.remove) { continue }
        $element.children[$name] = ConvertFrom-RawXml $child (Get-ChildSchema $Schema $name)
    }
    return $element
}

function Format-AttrValue($Value, $AttrSchema) {
    # A typed configuration value as the XML holds it.
    if ($null -eq $Value) { return '' }
    if ($Value -is [string]) { return $Value }
    $type = ''
    if ($null -ne $AttrSchema) { $type = [string]$AttrSchema.Type }
    if ($type -eq 'enum' -or $type -eq 'flags') {
        $number = [int64]$Value
        $enumValues = @($AttrSchema.GetEnumValues())
        if ($type -eq 'enum' -or $number -eq 0) {
            foreach ($e in $enumValues) { if ([int64]$e.Value -eq $number) { return [string]$e.Name } }
            return [string]$number
        }
        $names = New-Object 'System.Collections.Generic.List[string]'
        foreach ($e in $enumValues) {
            $bits = [int64]$e.Value
            if ($bits -ne 0 -and ($number -band $bits) -eq $bits) { $names.Add([string]$e.Name) }
        }
        return ($names -join ', ')
    }
    if ($Value -is [bool]) { if ($Value) { return 'true' } else { return 'false' } }
    if ($Value -is [timespan]) { return $Value.ToString() }
    return [System.Convert]::ToString($Value, [System.Globalization.CultureInfo]::InvariantCulture)
}

function Get-EnumNumber($AttrSchema, [string]$Text) {
    $t = $Text.Trim()
    $n = 0L
    if ([int64]::TryParse($t, [ref]$n)) { return $n }
    foreach ($e in @($AttrSchema.GetEnumValues())) {
        if ([string]::Equals([string]$e.Name, $t, [System.StringComparison]::OrdinalIgnoreCase)) { return [int64]$e.Value }
    }
    throw (New-AgentError 'InvalidValue' "'$t' is not a valid value of $($AttrSchema.Name)" 0x8007000D)
}

function ConvertTo-Canonical($AttrSchema, $Value) {
    # One spelling per meaning, for comparisons (true/True, "Ssl,SslNegotiateCert"/40).
    $text = [string]$Value
    if ($Value -is [bool]) { if ($Value) { $text = 'true' } else { $text = 'false' } }
    if ($null -eq $AttrSchema) { return $text }
    $type = [string]$AttrSchema.Type
    if ($type -eq 'bool') {
        if ($text -ieq 'true') { return 'true' }
        if ($text -ieq 'false') { return 'false' }
        throw (New-AgentError 'InvalidValue' "'$text' is not true or false ($($AttrSchema.Name))" 0x8007000D)
    }
    if ($type -eq 'enum') { return [string](Get-EnumNumber $AttrSchema $text) }
    if ($type -eq 'flags') {
        $sum = 0L
        foreach ($part in $text.Split(',')) {
            if ($part.Trim() -eq '') { continue }
            $sum = $sum -bor (Get-EnumNumber $AttrSchema $part)
        }
        return [string]$sum
    }
    if (@('int', 'uint', 'int64', 'long', 'short', 'ushort') -contains $type) {
        $n = 0L
        if (-not [int64]::TryParse($text.Trim(), [ref]$n)) {
            throw (New-AgentError 'InvalidValue' "'$text' is not a number ($($AttrSchema.Name))" 0x8007000D)
        }
        return [string]$n
    }
    return $text
}

function ConvertTo-AttrValue($AttrSchema, [string]$Text) {
    # The typed value Microsoft.Web.Administration expects for SetAttributeValue.
    $type = [string]$AttrSchema.Type
    $canonical = ConvertTo-Canonical $AttrSchema $Text
    switch ($type) {
        'bool' { return ($canonical -eq 'true') }
        'int' { return [int32]$canonical }
        'uint' { return [uint32]$canonical }
        'int64' { return [int64]$canonical }
        'long' { return [int64]$canonical }
        'timeSpan' { return [timespan]::Parse($Text) }
        'enum' { return (Format-AttrValue ([int64]$canonical) $AttrSchema) }
        'flags' { return ((Format-AttrValue ([int64]$canonical) $AttrSchema) -replace ', ', ',') }
    }
    return $Text
}

function Get-ElementPart($Element, [string]$Part) {
    # Reads attributes/children/items/clear of a JSON or agent Element, with defaults.
    $has = (Test-DictKey $Element $Part) -and $null -ne $Element[$Part]
    switch ($Part) {
        'attributes' { if ($has) { return , $Element[$Part] } else { return , [ordered]@{} } }
        'children' { if ($has) { return , $Element[$Part] } else { return , [ordered]@{} } }
        'items' { if ($has) { return , @($Element[$Part]) } else { return , @() } }
        'clear' { if ($has) { return [bool]$Element[$Part] } else { return $false } }
    }
}

function Assert-ElementShape($Element, [string]$Where) {
    if ($Element -isnot [System.Collections.IDictionary]) {
        throw (New-AgentError 'BadRequest' "$Where must be an Element object")
    }
    foreach ($k in @($Element.Keys)) {
        if (@('attributes', 'children', 'items', 'clear') -notcontains $k) {
            throw (New-AgentError 'BadRequest' "$Where has an unknown key '$k'")
        }
    }
    foreach ($c in @((Get-ElementPart $Element 'children').Keys)) {
        Assert-ElementShape (Get-ElementPart $Element 'children')[$c] "$Where/$c"
    }
    foreach ($i in (Get-ElementPart $Element 'items')) { Assert-ElementShape $i "$Where/item" }
}

function Add-EncryptedValues($Element, $Schema, $List, $Paths = $null, [string]$Where = '') {
    # Collects the [enc:...:enc] values of an Element; with $Paths, also where each sits
    # ("oneToOneMappings/add[1]@password"), to name a value that cannot be decrypted.
    $attrs = Get-ElementPart $Element 'attributes'
    foreach ($name in @($attrs.Keys)) {
        $s = Get-AttrSchema $Schema $name
        $v = [string]$attrs[$name]
        if ($null -ne $s -and $s.IsEncrypted -and (Test-EncryptedForm $v)) {
            if (-not $List.Contains($v)) { [void]$List.Add($v) }
            if ($null -ne $Paths) { [void]$Paths.Add(@("$Where@$name", $v)) }
        }
    }
    $children = Get-ElementPart $Element 'children'
    foreach ($name in @($children.Keys)) { Add-EncryptedValues $children[$name] (Get-ChildSchema $Schema $name) $List $Paths "$Where/$name" }
    $names = Get-CollectionNames $Schema
    $index = 0
    foreach ($item in (Get-ElementPart $Element 'items')) {
        $itemSchema = $null
        if ($names.isCollection) { $itemSchema = $Schema.CollectionSchema.GetAddElementSchema($names.add[0]) }
        Add-EncryptedValues $item $itemSchema $List $Paths "$Where/$($names.add[0])[$index]"
        $index++
    }
}

$script:AgentTemp = $null

function Get-AgentTempDirectory {
    # A folder of this agent process's own, never the account's TEMP (which an account that
    # never logged on may not have): %windir%\Temp\iis-clientcert-<guid>, where users cannot
    # list names, with a protected DACL for SYSTEM and Administrators only. TMP and TEMP
    # point at it for the rest of the process (Path.GetTempPath and child processes read
    # them; every use in this script goes through this function first); it is removed when
    # the request is done (a persistent agent serves many: each gets a new one).
    if ($null -ne $script:AgentTemp) { return $script:AgentTemp }
    $path = Join-Path $env:windir ('Temp\iis-clientcert-' + [guid]::NewGuid().ToString('N'))
    $folder = [System.IO.Directory]::CreateDirectory($path)
    $acl = New-Object System.Security.AccessControl.DirectorySecurity
    $acl.SetAccessRuleProtection($true, $false)
    $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    foreach ($sid in @('S-1-5-18', 'S-1-5-32-544')) {
        $identity = New-Object System.Security.Principal.SecurityIdentifier($sid)
        $rule = New-Object System.Security.AccessControl.FileSystemAccessRule($identity, [System.Security.AccessControl.FileSystemRights]::FullControl, $inherit, [System.Security.AccessControl.PropagationFlags]::None, [System.Security.AccessControl.AccessControlType]::Allow)
        $acl.AddAccessRule($rule)
    }
    Set-FolderAccess $folder $acl
    $script:AgentTemp = $path
    $env:TMP = $path
    $env:TEMP = $path
    return $path
}

function Remove-AgentTempDirectory {
    if ($null -eq $script:AgentTemp) { return }
    Remove-Item -LiteralPath $script:AgentTemp -Recurse -Force -ErrorAction SilentlyContinue
    $script:AgentTemp = $null
}

function Unprotect-IisValues($Values) {
    # Decrypts [enc:...:enc] values with this host's key, through IIS's own config system
    # (values it cannot decrypt are missing from the map):
    # a file of applicationHost.config's declarations and providers (below) gets one location
    # per value and is read with a read-only ServerManager, in the agent's private folder
    # (SYSTEM and Administrators only), and removed. No plain value is written anywhere.
    # Ordinal: ciphertexts are case-sensitive base64 (a PowerShell @{} is not).
    $map = New-Object 'System.Collections.Generic.Dictionary[string,string]' ([System.StringComparer]::Ordinal)
    if (@($Values).Count -eq 0) { return $map }
    # The copy holds what decrypting needs and nothing else: the section declarations and
    # the providers (configProtectedData holds the AES session key, itself sealed with the
    # machine's RSA key). No other ciphertext of the host's (application pool identities,
    # other sites' passwords) is written anywhere, and no configSource file is needed.
    $live = Get-ApphostXml
    $doc = New-Object System.Xml.XmlDocument
    $root = $doc.AppendChild($doc.CreateElement('configuration'))
    foreach ($name in @('configSections', 'configProtectedData')) {
        $node = Get-ChildXml $live.DocumentElement $name
        if ($null -ne $node) { [void]$root.AppendChild($doc.ImportNode($node, $true)) }
    }
    $paths = New-List
    $i = 0
    foreach ($value in $Values) {
        $path = "iis-clientcert-decrypt-$i"
        $location = $doc.CreateElement('location')
        $location.SetAttribute('path', $path)
        $node = $location
        foreach ($part in @('system.webServer', 'security', 'authentication', 'anonymousAuthentication')) {
            $next = $doc.CreateElement($part)
            [void]$node.AppendChild($next)
            $node = $next
        }
        $node.SetAttribute('password', [string]$value)
        [void]$doc.DocumentElement.AppendChild($location)
        [void]$paths.Add($path)
        $i++
    }
    $dir = Join-Path (Get-AgentTempDirectory) ('decrypt-' + [guid]::NewGuid().ToString('N'))
    [void][System.IO.Directory]::CreateDirectory($dir)
    try {
        $copy = Join-Path $dir 'applicationHost.config'
        $doc.Save($copy)
        $sm = New-Object Microsoft.Web.Administration.ServerManager($copy)
        try {
            $cfg = $sm.GetApplicationHostConfiguration()
            for ($j = 0; $j -lt $paths.Count; $j++) {
                # Per value: one that this host's key cannot decrypt (another host's, a
                # placeholder) is left out of the map, and the caller decides what it means.
                try {
                    $section = $cfg.GetSection('system.webServer/security/authentication/anonymousAuthentication', $paths[$j])
                    $plain = [string]$section.GetAttributeValue('password')
                    # A host password in plain text now: it must not reach any message.
                    Add-Secret $plain
                    $map[[string]@($Values)[$j]] = $plain
                } catch {
                    $null = $_
                }
            }
        } finally {
            $sm.Dispose()
        }
    } finally {
        Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue
    }
    return $map
}

function Test-MetaAttribute([string]$Name) {
    # Locking and config-source attributes the configuration system adds to any element.
    return ($Name -cmatch '^(lockAttributes|lockAllAttributesExcept|lockElements|lockAllElementsExcept|lockItem|configSource)$')
}

function Get-ElementSignature($Element, $Schema, $Plain) {
    # A canonical text of an Element for comparison. $Plain maps encrypted values to their
    # plain text when given (the signature then holds secrets: it never leaves this process).
    $sb = New-Object System.Text.StringBuilder
    $attrs = Get-ElementPart $Element 'attributes'
    foreach ($name in @($attrs.Keys | Sort-Object)) {
        $s = Get-AttrSchema $Schema $name
        # Locks and configSource are the host's, kept by every write: no part of the content.
        if ($null -eq $s -and (Test-MetaAttribute $name)) { continue }
        if ($null -eq $s -and $null -ne $Schema) {
            throw (New-AgentError 'InvalidValue' "'$name' is not an attribute of $($Schema.Name)" 0x8007000D)
        }
        $v = $attrs[$name]
        if ($null -ne $s -and $s.IsEncrypted) {
            $text = [string]$v
            if ($null -ne $Plain -and (Test-EncryptedForm $text) -and $Plain.ContainsKey($text)) { $text = $Plain[$text] }
            $canonical = 'secret:' + $text
        } else {
            $canonical = ConvertTo-Canonical $s $v
        }
        [void]$sb.Append('@').Append($name).Append('=').Append($canonical.Length).Append(':').Append($canonical)
    }
    $children = Get-ElementPart $Element 'children'
    foreach ($name in @($children.Keys | Sort-Object)) {
        $childSchema = Get-ChildSchema $Schema $name
        if ($null -eq $childSchema -and $null -ne $Schema) {
            throw (New-AgentError 'InvalidValue' "'$name' is not a child element of $($Schema.Name)" 0x8007000D)
        }
        $inner = Get-ElementSignature $children[$name] $childSchema $Plain
        if ($inner -ne '') { [void]$sb.Append('<').Append($name).Append('{').Append($inner).Append('}') }
    }
    $names = Get-CollectionNames $Schema
    $items = Get-ElementPart $Element 'items'
    if (@($items).Count -gt 0 -and $null -ne $Schema -and -not $names.isCollection) {
        throw (New-AgentError 'InvalidValue' "$($Schema.Name) is not a collection: it takes no items" 0x8007000D)
    }
    if (Get-ElementPart $Element 'clear') { [void]$sb.Append('!clear') }
    foreach ($item in $items) {
        $itemSchema = $null
        if ($names.isCollection) { $itemSchema = $Schema.CollectionSchema.GetAddElementSchema($names.add[0]) }
        [void]$sb.Append('[').Append((Get-ElementSignature $item $itemSchema $Plain)).Append(']')
    }
    return $sb.ToString()
}

function Set-ConfigElement($Target, $Element, $Schema, $Plain) {
    # Writes an Element into a (reverted, so empty at this location) ConfigurationElement.
    $attrs = Get-ElementPart $Element 'attributes'
    foreach ($name in @($attrs.Keys)) {
        $s = Get-AttrSchema $Schema $name
        if ($null -eq $s -and (Test-MetaAttribute $name)) { continue }  # locks are not ours to write
        if ($null -eq $s) { throw (New-AgentError 'InvalidValue' "'$name' is not an attribute of $($Schema.Name)" 0x8007000D) }
        $text = [string]$attrs[$name]
        if ($s.IsEncrypted) {
            if ((Test-EncryptedForm $text) -and $Plain.ContainsKey($text)) { $text = $Plain[$text] }
            # Plain text in, IIS encrypts it with the configured provider on commit.
            $Target.SetAttributeValue($s.Name, $text)
        } else {
            $Target.SetAttributeValue($s.Name, (ConvertTo-AttrValue $s $text))
        }
    }
    $children = Get-ElementPart $Element 'children'
    foreach ($name in @($children.Keys)) {
        $childSchema = Get-ChildSchema $Schema $name
        if ($null -eq $childSchema) { throw (New-AgentError 'InvalidValue' "'$name' is not a child element of $($Schema.Name)" 0x8007000D) }
        Set-ConfigElement $Target.GetChildElement($childSchema.Name) $children[$name] $childSchema $Plain
    }
    $items = Get-ElementPart $Element 'items'
    $clear = Get-ElementPart $Element 'clear'
    if ($clear -or @($items).Count -gt 0) {
        $names = Get-CollectionNames $Schema
        if (-not $names.isCollection) { throw (New-AgentError 'InvalidValue' "$($Schema.Name) is not a collection" 0x8007000D) }
        $collection = $Target.GetCollection()
        if ($clear) { $collection.Clear() }
        $tag = $names.add[0]
        $itemSchema = $Schema.CollectionSchema.GetAddElementSchema($tag)
        foreach ($item in $items) {
            $itemAttrs = Get-ElementPart $item 'attributes'
            foreach ($s in $itemSchema.AttributeSchemas) {
                if ($s.IsRequired -and (-not (Test-DictKey $itemAttrs $s.Name) -or [string]$itemAttrs[$s.Name] -eq '')) {
                    throw (New-AgentError 'InvalidValue' "required attribute '$($s.Name)' is missing in an item of $($Schema.Name)" 0x8007000D)
                }
            }
            $new = $collection.CreateElement($tag)
            Set-ConfigElement $new $item $itemSchema $Plain
            [void]$collection.Add($new)
        }
    }
}

function Restore-LockMetadata($Target, $Raw, $Schema, $Desired) {
    # The owner's locks (lockAttributes, lockElements, ... of contract.LOCK_ATTRIBUTES) on
    # the element a write replaced, and on the child elements the write keeps:
    # RevertToParent drops them with the element, so they go back as metadata (Microsoft's
    # IIS.Administration copies them the same way when it replaces an element).
    if ($null -eq $Raw) { return }
    foreach ($attr in $Raw.Attributes) {
        $name = [string]$attr.Name
        if ($name -eq 'configSource' -or -not (Test-MetaAttribute $name)) { continue }
        $value = [string]$attr.Value
        if ($name -eq 'lockItem') { $Target.SetMetadata($name, ($value -ieq 'true')) } else { $Target.SetMetadata($name, $value) }
    }
    $children = Get-ElementPart $Desired 'children'
    foreach ($name in @($children.Keys)) {
        $childSchema = Get-ChildSchema $Schema $name
        $rawChild = Get-ChildXml $Raw $name
        if ($null -eq $childSchema -or $null -eq $rawChild) { continue }
        Restore-LockMetadata $Target.GetChildElement($childSchema.Name) $rawChild $childSchema $children[$name]
    }
}

function Get-RawCandidates($Candidates, [string]$ChildName) {
    $out = New-List
    foreach ($c in $Candidates) {
        if ($null -eq $c) { continue }
        $x = Get-ChildXml $c $ChildName
        if ($null -ne $x) { [void]$out.Add($x) }
    }
    return , $out
}

function Find-RawItems($Candidates, $Item) {
    # The XML entries (nearest location first) of a collection item, matched by its key.
    $out = New-List
    $keys = New-List
    foreach ($s in $Item.Schema.AttributeSchemas) {
        if ($s.IsUniqueKey -or $s.IsCombinedKey) {
            [void]$keys.Add(@($s.Name, (Format-AttrValue $Item.GetAttributeValue($s.Name) $s)))
        }
    }
    if ($keys.Count -eq 0) { return , $out }
    foreach ($c in $Candidates) {
        if ($null -eq $c) { continue }
        foreach ($x in $c.ChildNodes) {
            if ($x.NodeType -ne [System.Xml.XmlNodeType]::Element -or $x.LocalName -ne $Item.ElementTagName) { continue }
            $match = $true
            foreach ($k in $keys) { if ($x.GetAttribute($k[0]) -cne $k[1]) { $match = $false; break } }
            if ($match) { [void]$out.Add($x) }
        }
    }
    return , $out
}

function ConvertFrom-ConfigElement($Element, $Candidates) {
    # The effective Element (inherited and default values included). Encrypted values come
    # from the raw XML (nearest location that sets them), never decrypted.
    $result = New-Element
    foreach ($attr in $Element.Attributes) {
        $s = $attr.Schema
        if ($null -ne $s -and $s.IsEncrypted) {
            # From the raw XML (nearest location that sets it): reading .Value would decrypt,
            # and one value this host cannot decrypt would fail the whole read.
            $value = $null
            foreach ($c in $Candidates) {
                if ($null -ne $c -and $c.HasAttribute($attr.Name)) {
                    $value = $c.GetAttribute($attr.Name)
                    if ($value -ne '' -and -not (Test-EncryptedForm $value)) { $value = '[enc:Unencrypted::enc]' }
                    break
                }
            }
            if ($null -eq $value) {
                # Set where the raw XML does not show (a web.config): only whether it is empty.
                $value = '[enc:Unknown::enc]'
                try { if ([string]$attr.Value -eq '') { $value = '' } } catch { $null = $_ }
            }
            $result.attributes[$attr.Name] = $value
        } else {
            $result.attributes[$attr.Name] = Format-AttrValue $attr.Value $s
        }
    }
    foreach ($child in $Element.ChildElements) {
        $result.children[$child.ElementTagName] = ConvertFrom-ConfigElement $child (Get-RawCandidates $Candidates $child.ElementTagName)
    }
    if ($null -ne $Element.Schema.CollectionSchema) {
        foreach ($item in $Element.GetCollection()) {
            [void]$result.items.Add((ConvertFrom-ConfigElement $item (Find-RawItems $Candidates $item)))
        }
    }
    return $result
}

function Split-WebLocation([string]$Location) {
    $loc = $Location.Trim('/')
    if ($loc -eq '') { throw (New-AgentError 'InvalidValue' "target 'webconfig' needs a site path; the server level is applicationHost.config" 0x8007000D) }
    $cut = $loc.IndexOf('/', [System.StringComparison]::Ordinal)
    if ($cut -lt 0) { return @($loc, '/') }
    return @($loc.Substring(0, $cut), '/' + $loc.Substring($cut + 1))
}

function Get-WebConfigPath($Sm, [string]$SiteName, [string]$AppPath) {
    # The web.config of the virtual directory that serves $AppPath.
    $site = Get-SiteOrFail $Sm $SiteName
    $bestApp = $null
    foreach ($app in $site.Applications) {
        $p = $app.Path.TrimEnd('/')
        if ($AppPath -eq $app.Path -or $AppPath.StartsWith($p + '/', [System.StringComparison]::OrdinalIgnoreCase) -or $app.Path -eq '/') {
            if ($null -eq $bestApp -or $app.Path.Length -gt $bestApp.Path.Length) { $bestApp = $app }
        }
    }
    if ($null -eq $bestApp) { throw (New-AgentError 'NotFound' "no application serves $SiteName$AppPath" 0x80070490) }
    $rest = $AppPath.Substring([Math]::Min($AppPath.Length, $bestApp.Path.TrimEnd('/').Length)).Trim('/')
    $vdir = $bestApp.VirtualDirectories['/']
    if ($null -eq $vdir) { throw (New-AgentError 'NotFound' "no root virtual directory in $SiteName$($bestApp.Path)" 0x80070490) }
    $folder = [Environment]::ExpandEnvironmentVariables($vdir.PhysicalPath)
    if ($rest -ne '') { $folder = Join-Path $folder ($rest.Replace('/', '\')) }
    return (Join-Path $folder 'web.config')
}

function Invoke-ConfigGet($A) {
    $sectionName = Get-RequiredString $A 'section'
    $location = Get-RequiredString $A 'location'
    $sm = New-ServerManager
    try {
        # Reading at an unknown site's path is no error (GetSection shows what would be
        # inherited), so a read batch goes on and the provider names the missing site.
        $cfg = $sm.GetApplicationHostConfiguration()
        $section = $cfg.GetSection($sectionName, $location.Trim('/'))
        $doc = Get-ApphostXml
        $raw = Get-RawSection $doc $sectionName $location
        $element = $null
        if ($null -ne $raw) { $element = ConvertFrom-RawXml $raw $section.Schema }
        $candidates = New-List
        foreach ($loc in (Get-LocationChain $location)) {
            $x = Get-RawSection $doc $sectionName $loc
            if ($null -ne $x) { [void]$candidates.Add($x) }
        }
        $effective = ConvertFrom-ConfigElement $section $candidates
        return [ordered]@{ present = ($null -ne $raw); element = $element; effective = $effective }
    } finally {
        $sm.Dispose()
    }
}

function Get-SectionForWrite($Sm, [string]$SectionName, [string]$Location, [string]$Target) {
    # Returns @(section, current raw XML or $null). apphost writes go into
    # applicationHost.config <location path=...>, so sections locked by
    # overrideModeDefault="Deny" work; webconfig writes are refused by IIS for those.
    Assert-LocationSite $Sm $Location
    if ($Target -eq 'webconfig') {
        $parts = Split-WebLocation $Location
        $config = $Sm.GetWebConfiguration($parts[0], $parts[1])
        $section = $config.GetSection($SectionName)
        # OverrideModeEffective is what decides whether a web.config may set the section
        # (overrideModeDefault, then each location's overrideMode / allowOverride on the
        # way down: Microsoft docs, SectionInformation.EffectiveOverrideMode); IsLocked
        # only reports lockItem.
        if ([string]$section.OverrideModeEffective -eq 'Deny' -or $section.IsLocked) {
            throw (New-AgentError 'Locked' "This configuration section cannot be used at this path ($SectionName in web.config of '$Location'): it is locked at a parent level (overrideModeDefault=Deny)" 0x80070021)
        }
        $raw = $null
        $file = Get-WebConfigPath $Sm $parts[0] $parts[1]
        if (Test-Path -LiteralPath $file) { $raw = Get-RawSection (Get-ApphostXml $file) $SectionName '' }
        return , @($section, $raw)
    }
    $cfg = $Sm.GetApplicationHostConfiguration()
    $section = $cfg.GetSection($SectionName, $Location.Trim('/'))
    $raw = Get-RawSection (Get-ApphostXml) $SectionName $Location
    return , @($section, $raw)
}

# The native module of the Web-Cert-Auth feature and its image (Microsoft docs, "Introduction
# to IIS Architectures", Security Modules: IISCertificateMappingAuthenticationModule is
# Inetsrv\Authmap.dll; authcert.dll is the Active Directory mapping module). The simulator's
# FEATURE_MODULES holds the same pair (a unit test compares them).
$script:CertMapModule = 'IISCertificateMappingAuthenticationModule'
$script:CertMapImage = 'authmap.dll'

function Test-WebCertAuthInstalled {
    # Installed means loaded by IIS: the module registered in <globalModules>. The DLL alone
    # (the module removed by hand) maps nobody, so it does not count.
    $sm = New-ServerManager
    try {
        $modules = $sm.GetApplicationHostConfiguration().GetSection('system.webServer/globalModules').GetCollection()
        foreach ($m in $modules) {
            if ([string]$m.GetAttributeValue('name') -eq $script:CertMapModule) { return $true }
        }
    } finally {
        $sm.Dispose()
    }
    return $false
}

function Assert-SectionFeature([string]$SectionName) {
    if ($SectionName.Trim('/').StartsWith('system.applicationHost/', [System.StringComparison]::OrdinalIgnoreCase)) {
        throw (New-AgentError 'InvalidValue' "$SectionName is managed with site.list and binding.set/remove" 0x8007000D)
    }
    if ($SectionName -eq 'system.webServer/security/authentication/iisClientCertificateMappingAuthentication' -and -not (Test-WebCertAuthInstalled)) {
        $why = 'is not installed'
        if (Test-Path -LiteralPath (Join-Path $env:windir "system32\inetsrv\$script:CertMapImage")) {
            $why = "is not registered ($script:CertMapImage is there, but $script:CertMapModule is missing from <globalModules>)"
        }
        throw (New-AgentError 'FeatureMissing' "the Windows feature Web-Cert-Auth (IIS Client Certificate Mapping Authentication) $($why): Install-WindowsFeature Web-Cert-Auth")
    }
}

function Invoke-ConfigSet($A) {
    $sectionName = Get-RequiredString $A 'section'
    $location = Get-RequiredString $A 'location'
    $desired = Get-RequiredArg $A 'element'
    $target = [string](Get-Arg $A 'target' 'apphost')
    Assert-ElementShape $desired 'element'
    Assert-SectionFeature $sectionName
    $sm = New-ServerManager
    try {
        $pair = Get-SectionForWrite $sm $sectionName $location $target
        $section = $pair[0]
        $raw = $pair[1]
        $schema = $section.Schema
        $current = New-Element
        if ($null -ne $raw) { $current = ConvertFrom-RawXml $raw $schema }
        if ((Get-ElementSignature $desired $schema $null) -ceq (Get-ElementSignature $current $schema $null)) {
            return [ordered]@{ changed = $false }
        }
        $plain = @{}
        $encrypted = New-List
        $desiredPaths = New-List
        Add-EncryptedValues $desired $schema $encrypted $desiredPaths "$sectionName at '$location'"
        Add-EncryptedValues $current $schema $encrypted
        if ($encrypted.Count -gt 0) {
            # Compare plain text: an encrypted value differs on every write. A current value
            # that cannot be decrypted keeps its ciphertext here, so it compares "different".
            $plain = Unprotect-IisValues $encrypted
            if ((Get-ElementSignature $desired $schema $plain) -ceq (Get-ElementSignature $current $schema $plain)) {
                return [ordered]@{ changed = $false }
            }
        }
        # IIS's API takes plain text and encrypts it: a desired ciphertext this host cannot
        # decrypt would be encrypted twice. Name it and write nothing.
        $bad = @($desiredPaths | Where-Object { -not $plain.ContainsKey([string]$_[1]) } | ForEach-Object { "'$($_[0].Split('@')[-1])' at $($_[0].Substring(0, $_[0].LastIndexOf('@', [System.StringComparison]::Ordinal)))" })
        if ($bad.Count -gt 0) {
            throw (New-AgentError 'InvalidValue' ("The encrypted value of " + ($bad -join ', ') + " cannot be decrypted with this host's key (it was encrypted on another host, or is a placeholder): give the plain value") 0x80090005)
        }
        # Authoritative: drop what this location holds, then write the element afresh,
        # with the locks the owner had put on it.
        $section.RevertToParent()
        Set-ConfigElement $section $desired $schema $plain
        Restore-LockMetadata $section $raw $schema $desired
        $sm.CommitChanges()
        return [ordered]@{ changed = $true }
    } finally {
        $sm.Dispose()
    }
}

function Invoke-ConfigClear($A) {
    $sectionName = Get-RequiredString $A 'section'
    $location = Get-RequiredString $A 'location'
    $target = [string](Get-Arg $A 'target' 'apphost')
    Assert-SectionFeature $sectionName
    $sm = New-ServerManager
    try {
        $pair = Get-SectionForWrite $sm $sectionName $location $target
        if ($null -eq $pair[1]) { return [ordered]@{ changed = $false } }
        $pair[0].RevertToParent()
        $sm.CommitChanges()
        return [ordered]@{ changed = $true }
    } finally {
        $sm.Dispose()
    }
}

# --- sites and bindings ------------------------------------------------------------------

# HTTP.sys SSL record settings by netsh parameter name, with the value a record gets when
# netsh is not given them (contract.SSLCERT_DEFAULTS). `netsh http update sslcert`
# replaces the whole record: a rewrite passes every setting found, or the owner's
# DisableTLS13, OCSP, CTL ... settings are lost (FACTS.md "Real-host pitfalls", win-acme #2831).
$script:SslCertDefaults = [ordered]@{
    verifyclientcertrevocation = $true
    verifyrevocationwithcachedclientcertonly = $false
    usagecheck = $true
    revocationfreshnesstime = 0
    urlretrievaltimeout = 0
    sslctlidentifier = ''
    sslctlstorename = ''
    dsmapperusage = $false
    clientcertnegotiation = $false
    reject = $false
    disablehttp2 = $false
    disablequic = $false
    disabletls13 = $false
    disableocspstapling = $false
    enabletokenbinding = $false
    logextendedevents = $false
    disablelegacytls = $false
    enablesessionticket = $false
    disabletls12 = $false
    disablesessionid = $false
}
# The HTTP_SERVICE_CONFIG_SSL_FLAG_* bit (http.h) of the registry's DefaultFlags behind
# each boolean netsh setting.
$script:SslFlagBits = [ordered]@{
    dsmapperusage = 0x1
    clientcertnegotiation = 0x2
    reject = 0x8
    disablehttp2 = 0x10
    disablequic = 0x20
    disabletls13 = 0x40
    disableocspstapling = 0x80
    enabletokenbinding = 0x100
    logextendedevents = 0x200
    disablelegacytls = 0x400
    enablesessionticket = 0x800
    disabletls12 = 0x1000
    disablesessionid = 0x4000
}
# IIS binding sslFlags bits that stand for a record setting (contract.BINDING_FLAG_SETTINGS):
# a bit set turns the setting on, a bit this write clears turns it off, others stay.
$script:BindingFlagSettings = @(@(4, 'disablehttp2'), @(8, 'disableocspstapling'), @(16, 'disablequic'), @(32, 'disabletls13'), @(64, 'disablelegacytls'))

function Get-SslEndpoint([string]$BindingInformation, [int]$SslFlags) {
    # HTTP.sys keys of an IIS https binding "ip:port:host": SNI -> host:port, else ip:port.
    $parts = $BindingInformation.Split(':')
    if ($parts.Count -lt 3) { throw (New-AgentError 'InvalidValue' "binding information '$BindingInformation' is not IP:PORT:HOST" 0x8007000D) }
    $hostName = $parts[$parts.Count - 1]
    $port = $parts[$parts.Count - 2]
    $ip = ($parts[0..($parts.Count - 3)] -join ':')
    if (($SslFlags -band 2) -ne 0) {
        # Central Certificate Store: one record per port (netsh ... ccs=<port>), and the
        # certificate is a file on the CCS share, never a hash of LocalMachine\My. Where
        # HTTP.sys keeps it in the registry is for a real host to confirm (docs/real-host.md);
        # it holds no SslCertHash, so nothing here reads a hash for such a binding.
        return @{ kind = 'ccs'; key = "$port"; regKey = "$script:HttpParamsKey\SslCcsBindingInfo\0.0.0.0:$port" }
    }
    if (($SslFlags -band 1) -ne 0) {
        return @{ kind = 'hostnameport'; key = "$($hostName):$port"; regKey = "$script:HttpParamsKey\SslSniBindingInfo\$($hostName):$port" }
    }
    if ($ip -eq '*' -or $ip -eq '') { $ip = '0.0.0.0' }
    return @{ kind = 'ipport'; key = "$($ip):$port"; regKey = "$script:HttpParamsKey\SslBindingInfo\$($ip):$port" }
}

function Get-HttpSslRecord($Endpoint) {
    # The whole HTTP.sys record (what `netsh http show sslcert` shows), from HTTP's registry
    # parameters, or $null.
    $key = $Endpoint.regKey
    $hash = Get-RegValue $key 'SslCertHash'
    if ($null -eq $hash) { return $null }
    $mode = [int64](Get-RegValue $key 'DefaultCertCheckMode' 0)
    $flags = [int64](Get-RegValue $key 'DefaultFlags' 0)
    $appId = Get-RegValue $key 'AppId'
    if ($appId -is [byte[]] -and $appId.Length -eq 16) { $appId = (New-Object System.Guid (, [byte[]]$appId)).ToString('B') }
    if ($null -eq $appId -or [string]$appId -eq '') { $appId = $script:IisAppId }
    $settings = [ordered]@{}
    foreach ($name in $script:SslCertDefaults.Keys) { $settings[$name] = $script:SslCertDefaults[$name] }
    # DefaultCertCheckMode: 1 no revocation check, 2 cached only, 0x10000 no usage check.
    $settings['verifyclientcertrevocation'] = (($mode -band 0x1) -eq 0)
    $settings['verifyrevocationwithcachedclientcertonly'] = (($mode -band 0x2) -ne 0)
    $settings['usagecheck'] = (($mode -band 0x10000) -eq 0)
    $settings['revocationfreshnesstime'] = [int64](Get-RegValue $key 'DefaultRevocationFreshnessTime' 0)
    $settings['urlretrievaltimeout'] = [int64](Get-RegValue $key 'DefaultRevocationUrlRetrievalTimeout' 0)
    $settings['sslctlidentifier'] = [string](Get-RegValue $key 'DefaultSslCtlIdentifier' '')
    $settings['sslctlstorename'] = [string](Get-RegValue $key 'DefaultSslCtlStoreName' '')
    $known = 0L
    foreach ($name in $script:SslFlagBits.Keys) {
        $bit = [int64]$script:SslFlagBits[$name]
        $settings[$name] = (($flags -band $bit) -ne 0)
        $known = $known -bor $bit
    }
    return @{
        hash = ([System.BitConverter]::ToString([byte[]]$hash)).Replace('-', '')
        store = [string](Get-RegValue $key 'SslCertStoreName' 'MY')
        appId = [string]$appId
        negotiate = [bool]$settings['clientcertnegotiation']
        settings = $settings
        # Bits no netsh parameter can pass again (NO_RAW_FILTER 0x4, newer ones).
        unknownFlags = ($flags -band (-bnot $known))
    }
}

function Test-SameSslSettings($Left, $Right) {
    foreach ($name in $script:SslCertDefaults.Keys) {
        if ([string]$Left[$name] -cne [string]$Right[$name]) { return $false }
    }
    return $true
}

function Get-NetshSslArgs([string]$Verb, $Endpoint, [string]$Hash, [string]$Store, [string]$AppId, $Settings) {
    # Every setting that differs from its default, so an update (which replaces the whole
    # record) keeps what the record held. Defaults are left out: netsh of older Windows
    # does not know the newer parameters, and leaving one out means its default.
    $list = New-Object 'System.Collections.Generic.List[string]'
    foreach ($a in @('http', $Verb, 'sslcert', "$($Endpoint.kind)=$($Endpoint.key)", "certhash=$Hash", "appid=$AppId", "certstorename=$Store")) { $list.Add($a) }
    foreach ($name in $script:SslCertDefaults.Keys) {
        $value = $Settings[$name]
        if ([string]$value -ceq [string]$script:SslCertDefaults[$name]) { continue }
        if ($value -is [bool]) {
            if ($value) { $text = 'enable' } else { $text = 'disable' }
        } else {
            $text = [string]$value
        }
        $list.Add("$name=$text")
    }
    return , $list.ToArray()
}

function Test-SslEndpointInUse($Endpoint) {
    # Whether any site's https binding still maps to this HTTP.sys record.
    $sm = New-ServerManager
    try {
        foreach ($s in $sm.Sites) {
            foreach ($b in $s.Bindings) {
                if ($b.Protocol -ne 'https') { continue }
                $other = $null
                try { $other = Get-SslEndpoint $b.BindingInformation (Get-BindingFlags $b) } catch { $other = $null }
                if ($null -ne $other -and $other.key -eq $Endpoint.key) { return $true }
            }
        }
    } finally {
        $sm.Dispose()
    }
    return $false
}

function Get-BindingFlags($Binding) {
    try { return [int]$Binding.GetAttributeValue('sslFlags') } catch { return 0 }
}

function Invoke-SiteList($A) {
    $sm = New-ServerManager
    try {
        $sites = New-List
        foreach ($site in $sm.Sites) {
            $physical = ''
            $app = $site.Applications['/']
            if ($null -ne $app) {
                $vdir = $app.VirtualDirectories['/']
                if ($null -ne $vdir) { $physical = [Environment]::ExpandEnvironmentVariables($vdir.PhysicalPath) }
            }
            $bindings = New-List
            foreach ($b in $site.Bindings) {
                $flags = Get-BindingFlags $b
                $hash = $null
                $store = $null
                $negotiate = $false
                $sslcert = $null
                if ($b.Protocol -eq 'https') {
                    $ssl = $null
                    try { $ssl = Get-HttpSslRecord (Get-SslEndpoint $b.BindingInformation $flags) } catch { $ssl = $null }
                    if ($null -ne $ssl) {
                        $hash = $ssl.hash
                        $store = $ssl.store
                        $negotiate = $ssl.negotiate
                        $sslcert = $ssl.settings
                    }
                }
                [void]$bindings.Add([ordered]@{
                        protocol = [string]$b.Protocol
                        binding_information = [string]$b.BindingInformation
                        ssl_flags = $flags
                        certificate_hash = $hash
                        certificate_store = $store
                        client_cert_negotiation = $negotiate
                        sslcert = $sslcert
                    })
            }
            [void]$sites.Add([ordered]@{
                    name = [string]$site.Name
                    id = [int64]$site.Id
                    physical_path = $physical
                    bindings = $bindings
                })
        }
        return [ordered]@{ sites = $sites }
    } finally {
        $sm.Dispose()
    }
}

# site.log_tail: a real IIS says 403.16 only in its W3C log (sc-status, sc-substatus,
# sc-win32-status), in <logFile directory>\W3SVC<site id>\u_ex*.log. HTTP.sys buffers log
# lines: flush them first, so the request just made is there.
function ConvertFrom-W3CLog([string[]]$Lines) {
    $fields = @()
    $out = New-List
    foreach ($line in $Lines) {
        if ($line.StartsWith('#Fields:', [StringComparison]::Ordinal)) { $fields = $line.Substring(8).Trim() -split ' '; continue }
        if ($line.Length -eq 0 -or $line.StartsWith('#', [StringComparison]::Ordinal) -or $fields.Count -eq 0) { continue }
        $values = $line -split ' '
        $row = @{}
        for ($i = 0; $i -lt [Math]::Min($fields.Count, $values.Count); $i++) {
            $v = $values[$i]
            $row[$fields[$i]] = if ($v -eq '-') { '' } else { $v.Replace('+', ' ') }
        }
        $num = { param($n) $x = 0L; if ([int64]::TryParse([string]$row[$n], [ref]$x)) { $x } else { 0L } }
        [void]$out.Add([ordered]@{
                date = [string]$row['date']
                time = [string]$row['time']
                method = [string]$row['cs-method']
                uri_stem = [string]$row['cs-uri-stem']
                uri_query = [string]$row['cs-uri-query']
                port = (& $num 's-port')
                username = [string]$row['cs-username']
                client_ip = [string]$row['c-ip']
                status = (& $num 'sc-status')
                substatus = (& $num 'sc-substatus')
                win32_status = (& $num 'sc-win32-status')
            })
    }
    return , $out
}

function Invoke-SiteLogTail($A) {
    $sm = New-ServerManager
    try {
        $site = Get-SiteOrFail $sm ([string]$A.site)
        $root = [Environment]::ExpandEnvironmentVariables([string]$site.LogFile.Directory)
        $dir = Join-Path $root ('W3SVC' + $site.Id)
        try { & netsh.exe http flush logbuffer | Out-Null } catch { }
        $entries = New-List
        $file = Get-ChildItem -LiteralPath $dir -Filter 'u_ex*.log' -ErrorAction SilentlyContinue |
            Sort-Object LastWriteTimeUtc | Select-Object -Last 1
        if ($null -ne $file) {
            # FileShare.ReadWrite: IIS keeps the file open for writing.
            $stream = [IO.File]::Open($file.FullName, 'Open', 'Read', 'ReadWrite')
            try {
                $reader = New-Object IO.StreamReader($stream)
                $lines = $reader.ReadToEnd() -split "`r?`n"
            } finally { $stream.Dispose() }
            $all = ConvertFrom-W3CLog $lines
            $count = [Math]::Max(0, [Math]::Min([int]$A.count, 1000))
            $start = [Math]::Max(0, $all.Count - $count)
            for ($i = $start; $i -lt $all.Count; $i++) { [void]$entries.Add($all[$i]) }
        }
        return [ordered]@{
            site = [string]$site.Name
            site_id = [int64]$site.Id
            log_directory = $dir
            entries = $entries
        }
    } finally {
        $sm.Dispose()
    }
}

function ConvertTo-Thumbprint([string]$Text) {
    $t = ($Text -replace '[\s:]', '').ToUpperInvariant()
    if ($t -notmatch '^[0-9A-F]{40}$') { throw (New-AgentError 'InvalidValue' "'$Text' is not a SHA-1 thumbprint (40 hex digits)" 0x8007000D) }
    return $t
}

function ConvertTo-Bytes([string]$Hex) {
    $bytes = New-Object byte[] ($Hex.Length / 2)
    for ($i = 0; $i -lt $bytes.Length; $i++) { $bytes[$i] = [System.Convert]::ToByte($Hex.Substring($i * 2, 2), 16) }
    return , $bytes
}

function Find-Certificate([string]$StoreName, [string]$Thumbprint) {
    $store = New-Object System.Security.Cryptography.X509Certificates.X509Store($StoreName, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly)
    try {
        $found = $store.Certificates.Find([System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint, $Thumbprint, $false)
        if ($found.Count -gt 0) { return $found[0] }
        return $null
    } finally {
        $store.Close()
    }
}

function Invoke-Netsh([string[]]$Arguments) {
    # netsh carries no secret here: a certificate hash and IIS's app id are public.
    # 'Continue': in 5.1 a native command's stderr under 'Stop' would throw mid-output.
    $ErrorActionPreference = 'Continue'
    $output = & "$env:windir\system32\netsh.exe" @Arguments 2>&1 | Out-String
    $ErrorActionPreference = 'Stop'
    if ($LASTEXITCODE -ne 0) {
        # netsh's words are localised ("Error: 1312", "Fehler: 1312", "erreur : 1312"); the
        # Win32 error number at the end of the line is not, so it decides the kind.
        $hresult = $null
        $number = [regex]::Match($output, '(?m)[:\uFF1A]\s*(\d{1,10})\s*$')
        if ($number.Success) {
            $win32 = [int64]$number.Groups[1].Value
            if ($win32 -gt 0 -and $win32 -lt 65536) { $hresult = ConvertTo-HResult32 (0x80070000 -bor $win32) }
        }
        $code = 'Fault'
        if ($null -ne $hresult) { $code = Get-CodeForHResult $hresult }
        throw (New-AgentError $code ("netsh $($Arguments[0..2] -join ' ') failed: " + $output.Trim()) $hresult)
    }
}

function Find-HttpsBinding($Site, [string]$Info) {
    foreach ($b in $Site.Bindings) {
        if ($b.Protocol -eq 'https' -and [string]::Equals($b.BindingInformation, $Info, [System.StringComparison]::OrdinalIgnoreCase)) { return $b }
    }
    return $null
}

function Restore-BindingConfig([string]$SiteName, [string]$Info, $OldFlags, [bool]$Created) {
    # Undo a binding.set's config change (config only: HTTP.sys is restored by the caller).
    $sm = New-ServerManager
    try {
        $site = Get-SiteOrFail $sm $SiteName
        $b = Find-HttpsBinding $site $Info
        if ($null -eq $b) { return }
        if ($Created) { $site.Bindings.Remove($b, $true) } else { $b.SetAttributeValue('sslFlags', [int]$OldFlags) }
        $sm.CommitChanges()
    } finally {
        $sm.Dispose()
    }
}

function Assert-NotCentralStore([string]$SiteName, [string]$Info, [int]$Flags) {
    # A Central Certificate Store binding (sslFlags bit 2, new or existing) takes its
    # certificate from the CCS share by host name: a LocalMachine\My hash written for it
    # would go to a record no CCS binding reads, or replace another site's ip:port record.
    $existingFlags = 0
    $sm = New-ServerManager
    try {
        $site = Get-SiteOrFail $sm $SiteName
        $existing = Find-HttpsBinding $site $Info
        if ($null -ne $existing) { $existingFlags = Get-BindingFlags $existing }
    } finally {
        $sm.Dispose()
    }
    if ((($Flags -bor $existingFlags) -band 2) -ne 0) {
        throw (New-AgentError 'InvalidValue' "The https binding '$Info' of site '$SiteName' uses the Central Certificate Store (sslFlags bit 2): its certificate comes from the CCS share, which binding.set does not manage" 0x8007000D)
    }
}

function Invoke-BindingSet($A) {
    $siteName = Get-RequiredString $A 'site'
    $info = Get-RequiredString $A 'binding_information'
    $flags = [int](Get-RequiredArg $A 'ssl_flags')
    $hash = ConvertTo-Thumbprint (Get-RequiredString $A 'certificate_hash')
    $storeName = Get-RequiredString $A 'certificate_store'
    $negotiate = [bool](Get-RequiredArg $A 'client_cert_negotiation')
    Assert-NotCentralStore $siteName $info $flags
    $endpoint = Get-SslEndpoint $info $flags
    $certificate = Find-Certificate $storeName $hash
    if ($null -eq $certificate) {
        throw (New-AgentError 'NotFound' "certificate $hash is not in LocalMachine\$storeName" 0x80092004)
    }
    if (-not $certificate.HasPrivateKey) {
        # What netsh answers: ERROR_NO_SUCH_LOGON_SESSION.
        throw (New-AgentError 'BadCertificate' "SSL Certificate add failed: the certificate $hash has no private key" 0x80070520)
    }
    $record = Get-HttpSslRecord $endpoint
    if ($null -ne $record -and $record.unknownFlags -ne 0) {
        # Refuse rather than drop them: netsh cannot pass these settings again.
        throw (New-AgentError 'InvalidValue' ("the HTTP.sys certificate binding $($endpoint.kind)=$($endpoint.key) holds settings netsh cannot pass again (DefaultFlags bits 0x{0:X}); rewriting it would drop them: change it with the HTTP Server API or by hand" -f $record.unknownFlags) 0x80070032)
    }
    $created = $false
    $changed = $false
    $configChanged = $false
    $oldFlags = 0
    $oldEndpoint = $null
    $sm = New-ServerManager
    try {
        $site = Get-SiteOrFail $sm $siteName
        $existing = Find-HttpsBinding $site $info
        if ($null -eq $existing) {
            # The protocol overload writes config only; Add(info, hash, store) would also write
            # the HTTP.sys record afresh, without its other settings (win-acme #2831).
            $binding = $site.Bindings.Add($info, 'https')
            $binding.SetAttributeValue('sslFlags', $flags)
            $created = $true
            $configChanged = $true
        } else {
            $oldFlags = Get-BindingFlags $existing
            $oldEndpoint = Get-SslEndpoint $info $oldFlags
            if ($oldFlags -ne $flags) {
                # In place: Remove + Add through MWA rewrites (or deletes) the HTTP.sys record
                # that every site on this ip:port shares (KB 2405568).
                $existing.SetAttributeValue('sslFlags', $flags)
                $configChanged = $true
            }
        }
        if ($configChanged) {
            $sm.CommitChanges()
            $changed = $true
        }
    } finally {
        $sm.Dispose()
    }

    # HTTP.sys: the whole record, every setting it held passed again.
    $settings = [ordered]@{}
    foreach ($name in $script:SslCertDefaults.Keys) {
        if ($null -ne $record) { $settings[$name] = $record.settings[$name] } else { $settings[$name] = $script:SslCertDefaults[$name] }
    }
    $settings['clientcertnegotiation'] = $negotiate
    foreach ($pair in $script:BindingFlagSettings) {
        if (($flags -band $pair[0]) -ne 0) { $settings[$pair[1]] = $true }
        elseif (($oldFlags -band $pair[0]) -ne 0) { $settings[$pair[1]] = $false }
    }
    $added = $false
    $updated = $false
    try {
        if ($null -eq $record) {
            Invoke-Netsh (Get-NetshSslArgs 'add' $endpoint $hash $storeName $script:IisAppId $settings)
            $added = $true
            $changed = $true
        } elseif ($record.hash -ne $hash -or -not [string]::Equals($record.store, $storeName, [System.StringComparison]::OrdinalIgnoreCase) -or
            -not (Test-SameSslSettings $record.settings $settings)) {
            Invoke-Netsh (Get-NetshSslArgs 'update' $endpoint $hash $storeName $record.appId $settings)
            $updated = $true
            $changed = $true
        }
        if ($null -ne $oldEndpoint -and $oldEndpoint.key -ne $endpoint.key -and -not (Test-SslEndpointInUse $oldEndpoint) -and
            $null -ne (Get-HttpSslRecord $oldEndpoint)) {
            # The SNI bit moved the binding to another HTTP.sys key: the old record is unused.
            Invoke-Netsh @('http', 'delete', 'sslcert', "$($oldEndpoint.kind)=$($oldEndpoint.key)")
            $changed = $true
        }
    } catch {
        # Undo this op's own changes, so a rerun finds the host as it was and not
        # leftovers of ours that it would take for the owner's.
        $failure = $_
        try {
            if ($added) { Invoke-Netsh @('http', 'delete', 'sslcert', "$($endpoint.kind)=$($endpoint.key)") }
            if ($updated) { Invoke-Netsh (Get-NetshSslArgs 'update' $endpoint $record.hash $record.store $record.appId $record.settings) }
            if ($configChanged) { Restore-BindingConfig $siteName $info $oldFlags $created }
        } catch {
            $null = $_  # the first failure is the one to report
        }
        throw $failure
    }
    return [ordered]@{ changed = $changed; created = $created }
}

function Invoke-BindingRemove($A) {
    $siteName = Get-RequiredString $A 'site'
    $info = Get-RequiredString $A 'binding_information'
    $sm = New-ServerManager
    $endpoint = $null
    $flags = 0
    try {
        $site = Get-SiteOrFail $sm $siteName
        $existing = Find-HttpsBinding $site $info
        if ($null -eq $existing) { return [ordered]@{ changed = $false } }
        $flags = Get-BindingFlags $existing
        $endpoint = Get-SslEndpoint $info $flags
        # removeConfigOnly: otherwise MWA deletes the HTTP.sys record that every site on this
        # ip:port shares (KB 2405568); the record is handled below, when no binding uses it.
        $site.Bindings.Remove($existing, $true)
        $sm.CommitChanges()
    } finally {
        $sm.Dispose()
    }
    if (-not (Test-SslEndpointInUse $endpoint) -and $null -ne (Get-HttpSslRecord $endpoint)) {
        try {
            Invoke-Netsh @('http', 'delete', 'sslcert', "$($endpoint.kind)=$($endpoint.key)")
        } catch {
            # Put the binding back (config only), so a rerun finds it and tries again instead
            # of leaving an HTTP.sys record nobody owns.
            $failure = $_
            try {
                $sm = New-ServerManager
                try {
                    $binding = (Get-SiteOrFail $sm $siteName).Bindings.Add($info, 'https')
                    $binding.SetAttributeValue('sslFlags', $flags)
                    $sm.CommitChanges()
                } finally {
                    $sm.Dispose()
                }
            } catch {
                $null = $_
            }
            throw $failure
        }
    }
    return [ordered]@{ changed = $true }
}

# --- certificates ------------------------------------------------------------------------

function Open-Store([string]$StoreName, [bool]$Write) {
    if (@('Root', 'CA', 'My') -notcontains $StoreName) { throw (New-AgentError 'BadRequest' "store must be Root, CA or My") }
    $store = New-Object System.Security.Cryptography.X509Certificates.X509Store($StoreName, [System.Security.Cryptography.X509Certificates.StoreLocation]::LocalMachine)
    if ($Write) { $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadWrite) }
    else { $store.Open([System.Security.Cryptography.X509Certificates.OpenFlags]::ReadOnly) }
    return $store
}

function Invoke-CertList($A) {
    $store = Open-Store (Get-RequiredString $A 'store') $false
    try {
        $list = New-List
        $format = "yyyy-MM-dd'T'HH:mm:ss'Z'"
        $culture = [System.Globalization.CultureInfo]::InvariantCulture
        foreach ($c in $store.Certificates) {
            [void]$list.Add([ordered]@{
                    thumbprint = [string]$c.Thumbprint.ToUpperInvariant()
                    subject = [string]$c.Subject
                    issuer = [string]$c.Issuer
                    not_before = $c.NotBefore.ToUniversalTime().ToString($format, $culture)
                    not_after = $c.NotAfter.ToUniversalTime().ToString($format, $culture)
                    has_private_key = [bool]$c.HasPrivateKey
                    der_b64 = [System.Convert]::ToBase64String($c.RawData)
                })
        }
        return [ordered]@{ certificates = $list }
    } finally {
        $store.Close()
    }
}

function ConvertFrom-Base64Arg([string]$Text, [string]$Name) {
    try {
        return , [System.Convert]::FromBase64String(($Text -replace '\s', ''))
    } catch {
        throw (New-AgentError 'BadCertificate' "$Name is not base64" 0x8009310B)
    }
}

function Test-Pbes2Pfx([byte[]]$Bytes) {
    # The PBES2 algorithm identifier (1.2.840.113549.1.5.13, DER) is in the clear in a PFX
    # whose key or certificates are AES-encrypted.
    return ([System.BitConverter]::ToString($Bytes)).Contains('06-09-2A-86-48-86-F7-0D-01-05-0D')
}

function Get-PfxThumbprint([byte[]]$Bytes, [string]$Password) {
    # Which certificate the PFX carries, learned without persisting its key:
    # EphemeralKeySet (.NET 4.7.2+) keeps it in memory; without it, a machine key set that
    # is not persisted goes again with Reset().
    $storage = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]
    $flags = $storage::MachineKeySet
    if ([System.Enum]::GetNames($storage) -contains 'EphemeralKeySet') { $flags = [System.Enum]::Parse($storage, 'EphemeralKeySet') }
    $collection = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2Collection
    try {
        $collection.Import($Bytes, $Password, $flags)
    } catch {
        $inner = Get-InnermostException $_.Exception
        $build = [int](Get-RegValue 'SOFTWARE\Microsoft\Windows NT\CurrentVersion' 'CurrentBuildNumber' '0')
        if ((ConvertTo-HResult32 $inner.HResult) -eq (ConvertTo-HResult32 0x80070056) -and $build -lt 17763 -and (Test-Pbes2Pfx $Bytes)) {
            # What Windows reads as a wrong password is a PFX format this build cannot open.
            throw (New-AgentError 'BadCertificate' "The specified network password is not correct: this host (Windows build $build, older than 17763) cannot open a PFX encrypted with AES-256/PBES2; export it with TripleDES-SHA1 (PBES1) instead" 0x80070056)
        }
        throw
    }
    try {
        foreach ($c in $collection) { if ($c.HasPrivateKey) { return $c.Thumbprint.ToUpperInvariant() } }
        throw (New-AgentError 'BadCertificate' 'the PFX holds no private key' 0x8009200D)
    } finally {
        foreach ($c in $collection) { $c.Reset() }
    }
}

function Invoke-CertImport($A) {
    $storeName = Get-RequiredString $A 'store'
    $der = Get-Arg $A 'der_b64'
    $pfx = Get-Arg $A 'pfx_b64'
    if (($null -eq $der) -eq ($null -eq $pfx)) { throw (New-AgentError 'BadRequest' 'give exactly one of der_b64 and pfx_b64') }
    $X509 = 'System.Security.Cryptography.X509Certificates'
    if ($null -ne $der) {
        $cert = New-Object "$X509.X509Certificate2" (, (ConvertFrom-Base64Arg ([string]$der) 'der_b64'))
        $thumbprint = $cert.Thumbprint.ToUpperInvariant()
        $store = Open-Store $storeName $true
        try {
            $found = $store.Certificates.Find([System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint, $thumbprint, $false)
            if ($found.Count -gt 0) { return [ordered]@{ thumbprint = $thumbprint; added = $false } }
            $store.Add($cert)
            return [ordered]@{ thumbprint = $thumbprint; added = $true }
        } finally {
            $store.Close()
        }
    }
    $bytes = ConvertFrom-Base64Arg ([string]$pfx) 'pfx_b64'
    # The password goes straight from the JSON request to the import API.
    $password = [string](Get-Arg $A 'pfx_password' '')
    # The thumbprint first: PersistKeySet writes the key at import time, so importing a PFX
    # that is already there with its key would leave an orphan key container on each rerun.
    $thumbprint = Get-PfxThumbprint $bytes $password
    $present = Find-Certificate $storeName $thumbprint
    if ($null -ne $present -and $present.HasPrivateKey) { return [ordered]@{ thumbprint = $thumbprint; added = $false } }
    $flags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::MachineKeySet -bor
    [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::PersistKeySet
    if ([bool](Get-Arg $A 'exportable' $false)) {
        $flags = $flags -bor [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::Exportable
    }
    $collection = New-Object "$X509.X509Certificate2Collection"
    $collection.Import($bytes, $password, $flags)
    $cert = $null
    foreach ($c in $collection) { if ($c.HasPrivateKey -and $c.Thumbprint -ieq $thumbprint) { $cert = $c } }
    $store = $null
    try {
        if ($null -eq $cert) { throw (New-AgentError 'BadCertificate' 'the PFX holds no private key' 0x8009200D) }
        $store = Open-Store $storeName $true
        $store.Add($cert)
    } catch {
        # The key containers this import persisted are ours: they go with the failure, so a
        # rerun does not find (and keep) a key nobody uses.
        $failure = $_
        foreach ($c in $collection) { if ($c.HasPrivateKey) { Remove-PrivateKey $c } }
        throw $failure
    } finally {
        if ($null -ne $store) { $store.Close() }
    }
    # Other keys the PFX carried (rare) were persisted too, and no store entry uses them.
    foreach ($c in $collection) { if ($c.HasPrivateKey -and $c.Thumbprint -ine $thumbprint) { Remove-PrivateKey $c } }
    return [ordered]@{ thumbprint = $thumbprint; added = $true }
}

function Remove-PrivateKey($Cert) {
    # Best effort: delete the key container with the certificate (CNG or CAPI).
    try {
        $rsa = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPrivateKey($Cert)
        if ($rsa -is [System.Security.Cryptography.RSACng]) { $rsa.Key.Delete(); return }
        if ($rsa -is [System.Security.Cryptography.RSACryptoServiceProvider]) { $rsa.PersistKeyInCsp = $false; $rsa.Clear(); return }
    } catch {
        $null = $_
    }
    try {
        $ecdsa = [System.Security.Cryptography.X509Certificates.ECDsaCertificateExtensions]::GetECDsaPrivateKey($Cert)
        if ($ecdsa -is [System.Security.Cryptography.ECDsaCng]) { $ecdsa.Key.Delete() }
    } catch {
        $null = $_
    }
}

function Invoke-CertRemove($A) {
    $thumbprint = ConvertTo-Thumbprint (Get-RequiredString $A 'thumbprint')
    $store = Open-Store (Get-RequiredString $A 'store') $true
    try {
        $found = $store.Certificates.Find([System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint, $thumbprint, $false)
        if ($found.Count -eq 0) { return [ordered]@{ removed = $false } }
        foreach ($c in $found) {
            if ($c.HasPrivateKey) { Remove-PrivateKey $c }
            $store.Remove($c)
        }
        return [ordered]@{ removed = $true }
    } finally {
        $store.Close()
    }
}

# --- revocation, as HTTP.sys checks a client certificate ---------------------------------

function Get-CdpUrls($Cert) {
    $urls = New-List
    foreach ($ext in $Cert.Extensions) {
        if ($ext.Oid.Value -ne '2.5.29.31') { continue }
        foreach ($m in [regex]::Matches($ext.Format($false), 'URL=([^\s,]+)')) { [void]$urls.Add($m.Groups[1].Value) }
    }
    return , $urls
}

function Invoke-CertRevocation($A) {
    $X509 = 'System.Security.Cryptography.X509Certificates'
    $statusFlags = [System.Security.Cryptography.X509Certificates.X509ChainStatusFlags]
    $results = New-List
    foreach ($item in @(Get-RequiredArg $A 'certificates')) {
        $cert = New-Object "$X509.X509Certificate2" (, (ConvertFrom-Base64Arg ([string]$item) 'certificates'))
        $urls = Get-CdpUrls $cert
        $status = 'no_cdp'
        $hresult = $null
        if ($urls.Count -gt 0) {
            # The machine's chain engine, online, for this certificate only: the CRL is
            # fetched from the CDP by this host, as HTTP.sys would fetch it.
            $chain = New-Object "$X509.X509Chain" -ArgumentList $true
            try {
                $chain.ChainPolicy.RevocationMode = [System.Security.Cryptography.X509Certificates.X509RevocationMode]::Online
                $chain.ChainPolicy.RevocationFlag = [System.Security.Cryptography.X509Certificates.X509RevocationFlag]::EndCertificateOnly
                $chain.ChainPolicy.VerificationFlags = [System.Security.Cryptography.X509Certificates.X509VerificationFlags]::AllFlags
                [void]$chain.Build($cert)
                $flags = 0
                if ($chain.ChainElements.Count -gt 0) {
                    foreach ($s in $chain.ChainElements[0].ChainElementStatus) { $flags = $flags -bor [int]$s.Status }
                }
                if ($flags -band [int]$statusFlags::Revoked) {
                    $status = 'revoked'
                    $hresult = '0x80092010'
                } elseif ($flags -band ([int]$statusFlags::OfflineRevocation -bor [int]$statusFlags::RevocationStatusUnknown)) {
                    $status = 'offline'
                    $hresult = '0x80092013'
                } else {
                    $status = 'good'
                }
            } finally {
                $chain.Reset()
            }
        }
        [void]$results.Add([ordered]@{
                thumbprint = [string]$cert.Thumbprint.ToUpperInvariant()
                status = $status
                hresult = $hresult
                urls = $urls
            })
    }
    return [ordered]@{ results = $results }
}

# --- local users (ADSI WinNT: same behaviour on 2016 as on 2025) ---------------------------

$script:UF_ACCOUNTDISABLE = 0x2
$script:UF_PASSWD_CANT_CHANGE = 0x40
$script:UF_DONT_EXPIRE_PASSWD = 0x10000

function Assert-AccountName([string]$Name) {
    if ($Name.Length -lt 1 -or $Name.Length -gt 20 -or $Name -match '["/\\\[\]:;|=,+*?<>]' -or $Name -match '^[. ]+$') {
        throw (New-AgentError 'PolicyViolation' "The account name '$Name' is not valid: a local account name has 1 to 20 characters, none of `" / \ [ ] : ; | = , + * ? < >, and not only periods and spaces" 0x80070523)
    }
}

function Get-Computer { return [ADSI]"WinNT://$env:COMPUTERNAME,computer" }

function Find-LocalUser([string]$Name) {
    $computer = Get-Computer
    try {
        return $computer.Children.Find($Name, 'user')
    } catch {
        $failure = $_
        $inner = Get-InnermostException $_.Exception
        $h = ConvertTo-HResult32 $inner.HResult
        # NERR_UserNotFound, a name the WinNT path cannot hold, E_ADS_BAD_PATHNAME.
        if ($h -eq 0x800708AD -or $h -eq 0x80070035 -or $h -eq 0x80005000) { return $null }
        # Which code Find gives for a group's name, or for names with other odd characters,
        # is for a real host to say (docs/real-host.md): the account list decides, as
        # ansible.windows win_user finds accounts, so no such code reads as an error for
        # an account that is not there. One that is there and fails is a real error.
        if (-not (Test-LocalUserListed $Name)) { return $null }
        throw $failure
    }
}

function Test-LocalUserListed([string]$Name) {
    # DirectoryEntry.Children makes a new collection on each read: filter the one we walk.
    $children = (Get-Computer).Children
    [void]$children.SchemaFilter.Add('user')
    foreach ($child in $children) {
        if ([string]$child.SchemaClassName -eq 'User' -and [string]::Equals([string]$child.Name, $Name, [System.StringComparison]::OrdinalIgnoreCase)) { return $true }
    }
    return $false
}

function Get-AdsiValue($Entry, [string]$Name, $Default) {
    try {
        $v = $Entry.Properties[$Name].Value
        if ($null -eq $v) { return $Default }
        return $v
    } catch {
        return $Default
    }
}

function Get-UserGroups($User) {
    $groups = New-List
    foreach ($g in @($User.psbase.Invoke('Groups'))) {
        [void]$groups.Add([string]$g.GetType().InvokeMember('Name', 'GetProperty', $null, $g, $null))
    }
    return , $groups
}

function Invoke-UserGet($A) {
    $name = Get-RequiredString $A 'name'
    $user = Find-LocalUser $name
    if ($null -eq $user) {
        return [ordered]@{ exists = $false; name = $name; full_name = ''; description = ''; disabled = $false; password_never_expires = $false; user_cannot_change_password = $false; groups = @(); bad_password_count = 0; locked_out = $false; sid = $null }
    }
    $flags = [int64](Get-AdsiValue $user 'UserFlags' 0)
    # objectSid as bytes (as ansible.windows win_user reads it): what the account's ACEs hold.
    $sidBytes = [byte[]]$user.Properties['objectSid'].Value
    $sid = (New-Object -TypeName System.Security.Principal.SecurityIdentifier -ArgumentList $sidBytes, 0).Value
    return [ordered]@{
        exists = $true
        name = [string]$user.Name
        full_name = [string](Get-AdsiValue $user 'FullName' '')
        description = [string](Get-AdsiValue $user 'Description' '')
        disabled = (($flags -band $script:UF_ACCOUNTDISABLE) -ne 0)
        password_never_expires = (($flags -band $script:UF_DONT_EXPIRE_PASSWD) -ne 0)
        user_cannot_change_password = (($flags -band $script:UF_PASSWD_CANT_CHANGE) -ne 0)
        groups = (Get-UserGroups $user)
        bad_password_count = [int](Get-AdsiValue $user 'BadPasswordAttempts' 0)
        locked_out = (($flags -band $script:UF_LOCKOUT) -ne 0)
        sid = [string]$sid
    }
}

function Initialize-LogonType {
    # LogonUser through P/Invoke, defined at most once per agent process and only when a
    # logon is tried. The type is emitted in memory (System.Reflection.Emit, the way
    # PSReflect defines Win32 functions), not compiled: Add-Type runs the C# compiler
    # (csc.exe and files in TMP on 5.1, Roslyn on 7), about a second at the first logon of
    # every agent process. AssemblyBuilder.DefineDynamicAssembly is on .NET Framework 4.5+
    # and .NET alike (AppDomain's is .NET Framework only). Script-block logging flags
    # scripts that emit P/Invoke types as suspicious (event 4104), as it does Add-Type.
    if ($null -ne $script:LogonApi) { return }
    $name = [System.Reflection.AssemblyName]::new('IisClientCertLogon')
    $assembly = [System.Reflection.Emit.AssemblyBuilder]::DefineDynamicAssembly($name, [System.Reflection.Emit.AssemblyBuilderAccess]::Run)
    $module = $assembly.DefineDynamicModule('IisClientCertLogon')
    $type = $module.DefineType('IisClientCertLogon', [System.Reflection.TypeAttributes]'Public, Abstract, Sealed, Class')
    $pinvoke = [System.Reflection.MethodAttributes]'Public, Static, HideBySig, PinvokeImpl'
    $logonUser = $type.DefineMethod('LogonUserW', $pinvoke, [bool], [type[]]@([string], [string], [string], [int], [int], [IntPtr].MakeByRefType()))
    [void]$logonUser.DefineParameter(6, [System.Reflection.ParameterAttributes]::Out, 'token')
    $logonUser.SetCustomAttribute((New-DllImport 'advapi32.dll' 'LogonUserW' $true))
    $closeHandle = $type.DefineMethod('CloseHandle', $pinvoke, [bool], [type[]]@([IntPtr]))
    $closeHandle.SetCustomAttribute((New-DllImport 'kernel32.dll' 'CloseHandle' $false))
    # TryLogon(user, domain, password, logonType): 0, or LogonUser's Win32 error, taken in
    # the same method: any later P/Invoke with SetLastError overwrites it (Microsoft docs on
    # Marshal's last-error methods), and PowerShell makes its own between two script lines.
    $tryLogon = $type.DefineMethod('TryLogon', [System.Reflection.MethodAttributes]'Public, Static, HideBySig', [int], [type[]]@([string], [string], [string], [int]))
    $il = $tryLogon.GetILGenerator()
    $token = $il.DeclareLocal([IntPtr])
    $failed = $il.DefineLabel()
    $op = [System.Reflection.Emit.OpCodes]
    $il.Emit($op::Ldarg_0)
    $il.Emit($op::Ldarg_1)
    $il.Emit($op::Ldarg_2)
    $il.Emit($op::Ldarg_3)
    $il.Emit($op::Ldc_I4_0)
    $il.Emit($op::Ldloca_S, $token)
    $il.Emit($op::Call, $logonUser)
    $il.Emit($op::Brfalse_S, $failed)
    $il.Emit($op::Ldloc_0)
    $il.Emit($op::Call, $closeHandle)
    $il.Emit($op::Pop)
    $il.Emit($op::Ldc_I4_0)
    $il.Emit($op::Ret)
    $il.MarkLabel($failed)
    $il.Emit($op::Call, [System.Runtime.InteropServices.Marshal].GetMethod('GetLastWin32Error'))
    $il.Emit($op::Ret)
    $script:LogonApi = $type.CreateType()
}

function New-DllImport([string]$Library, [string]$EntryPoint, [bool]$SetLastError) {
    # [DllImport(Library, EntryPoint = ..., CharSet = Unicode, SetLastError = ...)]: the
    # metadata writer turns this pseudo-attribute into the method's P/Invoke map, with
    # PreserveSig (DllImportAttribute's default, Microsoft docs) so BOOL stays the return
    # value; PSReflect (mattifestation/PSReflect, Add-Win32Type) defines functions this way.
    $attribute = [System.Runtime.InteropServices.DllImportAttribute]
    $fields = [System.Reflection.FieldInfo[]]@($attribute.GetField('EntryPoint'), $attribute.GetField('CharSet'), $attribute.GetField('SetLastError'))
    $values = [object[]]@($EntryPoint, [System.Runtime.InteropServices.CharSet]::Unicode, $SetLastError)
    return [System.Reflection.Emit.CustomAttributeBuilder]::new($attribute.GetConstructor([type[]]@([string])), [object[]]@($Library), $fields, $values)
}

function Test-Logon([string]$UserName, [string]$Password, [int]$LogonType = 3, [string]$DefaultDomain = '.') {
    # The Win32 error of LogonUser (0 = success). The password is a .NET string argument,
    # never a command line. Logon types: 2 interactive, 3 network, 4 batch, 8 cleartext.
    # Callers go through Invoke-GuardedLogon: every wrong password counts towards lockout.
    Initialize-LogonType
    $parts = Split-LogonName $UserName $DefaultDomain
    return [int]$script:LogonApi::TryLogon($parts[1], $parts[0], $Password, $LogonType)
}

# --- logons: the rules of contract.py, "Logons" -------------------------------------------

# LogonUser errors that prove the password right: contract.LOGON_VALID_CODES (a unit test
# compares the lists), after Ansible's Test-LocalCredential (win_user).
$script:LogonValidCodes = @(1327, 1328, 1329, 1385, 1330, 1331, 1793, 1907)
$script:ErrorLogonFailure = 1326
$script:ErrorAccountLockedOut = 1909
# IIS's logonMethod names as logon types: contract.LOGON_TYPES.
$script:LogonTypes = @{ Interactive = 2; Network = 3; Batch = 4; ClearText = 8 }
$script:UF_LOCKOUT = 0x10
$script:LogonState = $null
# The emitted LogonUser type (Initialize-LogonType).
$script:LogonApi = $null

function Reset-LogonState {
    # One request's logons: the passwords user.set has just set, the accounts whose logon
    # failed (tried once per request), the lockout policy (read once).
    $script:LogonState = @{ JustSet = (New-Object 'System.Collections.Generic.Dictionary[string,string]'); Failed = @{}; Policy = $null }
}

function Get-LockoutPolicy {
    # NetUserModalsGet level 3, as the WinNT provider shows it on the computer's account
    # domain ("WinNT://NAME", not ",computer"; FACTS.md). Seconds; a threshold that cannot be
    # read is -1 (the guard then takes the strictest policy).
    try {
        $domain = [ADSI]"WinNT://$env:COMPUTERNAME"
        return [ordered]@{
            threshold = [int](Get-AdsiValue $domain 'MaxBadPasswordsAllowed' -1)
            observation_window_s = [int](Get-AdsiValue $domain 'LockoutObservationInterval' 0)
            duration_s = [int](Get-AdsiValue $domain 'AutoUnlockInterval' 0)
        }
    } catch {
        return [ordered]@{ threshold = -1; observation_window_s = 0; duration_s = 0 }
    }
}

function Test-LogonGuardAllows([int]$BadCount, [int]$Threshold) {
    # contract.logon_guard_allows: reads use at most half of the lockout threshold.
    if ($Threshold -eq 0) { return $true }
    if ($Threshold -lt 0 -or $BadCount -lt 0) { return ($BadCount -eq 0) }
    return ($BadCount -lt [int][math]::Floor($Threshold / 2))
}

function Split-LogonName([string]$UserName, [string]$DefaultDomain) {
    # (domain, user) as LogonUser gets them: DOMAIN\user, user@domain (a UPN: no domain) or
    # the default domain ('' means '.', this host).
    $domain = $DefaultDomain
    if ([string]::IsNullOrEmpty($domain)) { $domain = '.' }
    $user = $UserName
    if ($UserName.Contains('\')) {
        $cut = $UserName.IndexOf('\', [System.StringComparison]::Ordinal)
        $domain = $UserName.Substring(0, $cut)
        $user = $UserName.Substring($cut + 1)
    } elseif ($UserName.Contains('@')) {
        $domain = $null
    }
    return , @($domain, $user)
}

function Get-LogonAccountKey([string]$UserName) {
    # contract.logon_account_key: the name without domain or UPN suffix, lower case.
    $name = $UserName.Substring($UserName.LastIndexOf('\', [System.StringComparison]::Ordinal) + 1)
    $at = $name.IndexOf('@', [System.StringComparison]::Ordinal)
    if ($at -ge 0) { $name = $name.Substring(0, $at) }
    return $name.ToLowerInvariant()
}

function ConvertTo-LogonVerdict([int]$Code) {
    # contract.logon_verdict: the one classification of a LogonUser answer.
    $hresult = $null
    if ($Code -ne 0) { $hresult = Format-HResult (0x80070000 -bor $Code) }
    if ($Code -eq $script:ErrorAccountLockedOut) { return (New-NotChecked $hresult) }
    $valid = ($Code -eq 0) -or ($script:LogonValidCodes -contains $Code)
    return [ordered]@{ valid = [bool]$valid; hresult = $hresult; checked = $true }
}

function New-NotChecked($HResult = $null) {
    return [ordered]@{ valid = $false; hresult = $HResult; checked = $false }
}

function Add-JustSet([string]$Name, [string]$Password) {
    if ($null -eq $script:LogonState) { Reset-LogonState }
    $script:LogonState.JustSet[$Name.ToLowerInvariant()] = $Password
}

function Invoke-GuardedLogon([string]$UserName, [string]$Password, [int]$LogonType, [string]$DefaultDomain = '') {
    # A logon only where it cannot lock an account (contract.py, "Logons").
    if ($null -eq $script:LogonState) { Reset-LogonState }
    $parts = Split-LogonName $UserName $DefaultDomain
    $domain = $parts[0]
    if ($null -eq $domain -or -not ($domain -eq '.' -or $domain -eq $env:COMPUTERNAME)) {
        return (New-NotChecked)  # a domain account: its count and policy live on a DC
    }
    $user = Find-LocalUser $parts[1]
    if ($null -eq $user) { return (ConvertTo-LogonVerdict $script:ErrorLogonFailure) }
    $key = ([string]$user.Name).ToLowerInvariant()
    $justSet = $script:LogonState.JustSet.ContainsKey($key) -and ($script:LogonState.JustSet[$key] -ceq $Password)
    if (-not $justSet) {
        $flags = [int64](Get-AdsiValue $user 'UserFlags' 0)
        if (($flags -band $script:UF_LOCKOUT) -ne 0) {
            return (New-NotChecked (Format-HResult (0x80070000 -bor $script:ErrorAccountLockedOut)))
        }
        if ($null -eq $script:LogonState.Policy) { $script:LogonState.Policy = Get-LockoutPolicy }
        $count = [int](Get-AdsiValue $user 'BadPasswordAttempts' -1)
        if ($script:LogonState.Failed.ContainsKey($key) -or -not (Test-LogonGuardAllows $count $script:LogonState.Policy.threshold)) {
            return (New-NotChecked)
        }
    }
    $verdict = ConvertTo-LogonVerdict (Test-Logon $UserName $Password $LogonType $DefaultDomain)
    if ($verdict.checked -and -not $verdict.valid) { $script:LogonState.Failed[$key] = $true }
    return $verdict
}

function Test-PasswordIsCurrent([string]$Name, [string]$Password) {
    # Right (even for an account that may not log on this way) only when a logon says so;
    # when the guard keeps the logon from being tried, user.set sets the password.
    return [bool](Invoke-GuardedLogon $Name $Password $script:LogonTypes['Network']).valid
}

function Invoke-UserSet($A) {
    $name = Get-RequiredString $A 'name'
    Assert-AccountName $name
    $password = Get-Arg $A 'password'
    $changed = New-List
    $user = Find-LocalUser $name
    $created = $false
    if ($null -eq $user) {
        $computer = Get-Computer
        $user = $computer.Create('user', $name)
        if ($null -ne $password) { [void]$user.psbase.Invoke('SetPassword', [string]$password) }
        $user.CommitChanges()
        $created = $true
    }
    try {
        if ($created) {
            $user = Find-LocalUser $name
        } elseif ($null -ne $password -and -not (Test-PasswordIsCurrent $name ([string]$password))) {
            [void]$user.psbase.Invoke('SetPassword', [string]$password)
            [void]$changed.Add('password')
        }
        # Set or found right: a logon with it in this request cannot be a bad attempt.
        if ($null -ne $password) { Add-JustSet $name ([string]$password) }
        $fullName = Get-Arg $A 'full_name'
        if ($null -ne $fullName -and [string](Get-AdsiValue $user 'FullName' '') -cne [string]$fullName) {
            $user.Properties['FullName'].Value = [string]$fullName
            [void]$changed.Add('full_name')
        }
        $description = Get-Arg $A 'description'
        if ($null -ne $description -and [string](Get-AdsiValue $user 'Description' '') -cne [string]$description) {
            $user.Properties['Description'].Value = [string]$description
            [void]$changed.Add('description')
        }
        $flags = [int64](Get-AdsiValue $user 'UserFlags' 0)
        $newFlags = $flags
        foreach ($pair in @(@('disabled', $script:UF_ACCOUNTDISABLE), @('password_never_expires', $script:UF_DONT_EXPIRE_PASSWD), @('user_cannot_change_password', $script:UF_PASSWD_CANT_CHANGE))) {
            $want = Get-Arg $A $pair[0]
            if ($null -eq $want) { continue }
            $bit = [int64]$pair[1]
            $has = ($newFlags -band $bit) -ne 0
            if ([bool]$want -ne $has) {
                if ([bool]$want) { $newFlags = $newFlags -bor $bit } else { $newFlags = $newFlags -band (-bnot $bit) }
                [void]$changed.Add($pair[0])
            }
        }
        if ($newFlags -ne $flags) { $user.Properties['UserFlags'].Value = [int]$newFlags }
        if ($changed.Count -gt 0 -and -not ($changed.Count -eq 1 -and $changed[0] -eq 'password')) { $user.CommitChanges() }
    } catch {
        # An account this op created goes with the failure: a rerun must not find a
        # half-made account and adopt it as the owner's.
        $failure = $_
        if ($created) {
            try {
                $leftover = Find-LocalUser $name
                if ($null -ne $leftover) { (Get-Computer).Children.Remove($leftover) }
            } catch {
                $null = $_
            }
        }
        throw $failure
    }
    if ($created) { $changed = New-List }
    return [ordered]@{ created = $created; changed = $changed }
}

function Invoke-UserDelete($A) {
    $name = Get-RequiredString $A 'name'
    $user = Find-LocalUser $name
    if ($null -eq $user) { return [ordered]@{ removed = $false } }
    $computer = Get-Computer
    $computer.Children.Remove($user)
    return [ordered]@{ removed = $true }
}

function Invoke-UserVerifyPassword($A) {
    $name = Get-RequiredString $A 'name'
    $password = Get-RequiredString $A 'password'
    # An unknown account fails like a wrong password (0x8007052E), as LogonUser does.
    return (Invoke-GuardedLogon $name $password $script:LogonTypes['Network'])
}

function Get-LocalGroup([string]$Group) {
    $computer = Get-Computer
    try {
        return $computer.Children.Find($Group, 'group')
    } catch {
        throw (New-AgentError 'NotFound' "local group '$Group' does not exist" 0x800708AC)
    }
}

function Get-MemberPath([string]$Member) {
    if ($Member.Contains('\')) {
        $parts = $Member.Split('\', 2)
        if ($parts[0] -eq '.' -or $parts[0] -ieq $env:COMPUTERNAME) { return "WinNT://$env:COMPUTERNAME/$($parts[1])" }
        return "WinNT://$($parts[0])/$($parts[1])"
    }
    return "WinNT://$env:COMPUTERNAME/$Member"
}

function Test-GroupMember($Group, [string]$Path) {
    return [bool]$Group.psbase.Invoke('IsMember', $Path)
}

function Invoke-GroupAddMember($A) {
    $group = Get-LocalGroup (Get-RequiredString $A 'group')
    $member = Get-RequiredString $A 'member'
    if (-not $member.Contains('\') -and $null -eq (Find-LocalUser $member)) {
        throw (New-AgentError 'NotFound' "local account '$member' does not exist" 0x800708AD)
    }
    $path = Get-MemberPath $member
    if (Test-GroupMember $group $path) { return [ordered]@{ changed = $false } }
    [void]$group.psbase.Invoke('Add', $path)
    return [ordered]@{ changed = $true }
}

function Invoke-GroupRemoveMember($A) {
    $group = Get-LocalGroup (Get-RequiredString $A 'group')
    $path = Get-MemberPath (Get-RequiredString $A 'member')
    if (-not (Test-GroupMember $group $path)) { return [ordered]@{ changed = $false } }
    [void]$group.psbase.Invoke('Remove', $path)
    return [ordered]@{ changed = $true }
}

# --- folder ACLs -------------------------------------------------------------------------

$script:RightsByName = [ordered]@{
    FullControl = [System.Security.AccessControl.FileSystemRights]::FullControl
    Modify = [System.Security.AccessControl.FileSystemRights]::Modify
    ReadAndExecute = [System.Security.AccessControl.FileSystemRights]::ReadAndExecute
    Read = [System.Security.AccessControl.FileSystemRights]::Read
}

function Format-Rights($Rights) {
    $value = [int64]$Rights -band (-bnot [int64][System.Security.AccessControl.FileSystemRights]::Synchronize)
    foreach ($name in $script:RightsByName.Keys) {
        $bits = [int64]$script:RightsByName[$name] -band (-bnot [int64][System.Security.AccessControl.FileSystemRights]::Synchronize)
        if ($value -eq $bits) { return $name }
    }
    return [string]$Rights
}

function Get-FolderAccess([System.IO.DirectoryInfo]$Folder) {
    # The folder's DACL only, so writing it back leaves owner and SACL alone. The security
    # methods are instance methods on .NET Framework and extension methods on .NET, which
    # PowerShell does not bind as methods (PowerShell/PowerShell#10088).
    $sections = [System.Security.AccessControl.AccessControlSections]::Access
    if ($script:IsDesktop) {
        return $Folder.GetAccessControl($sections)
    } else {
        return [System.IO.FileSystemAclExtensions]::GetAccessControl($Folder, $sections)
    }
}

function Set-FolderAccess([System.IO.DirectoryInfo]$Folder, $Acl) {
    if ($script:IsDesktop) {
        $Folder.SetAccessControl($Acl)
    } else {
        [System.IO.FileSystemAclExtensions]::SetAccessControl($Folder, $Acl)
    }
}

function Get-FolderOrFail([string]$Path) {
    if (-not [System.IO.Directory]::Exists($Path)) {
        throw (New-AgentError 'NotFound' "folder '$Path' does not exist" 0x80070003)
    }
    return (New-Object System.IO.DirectoryInfo($Path))
}

function Resolve-Identity([string]$Identity) {
    # A bare name is this computer's account or group, or a well-known / built-in name
    # (SYSTEM, IUSR, IIS_IUSRS, Users): never a domain account of the same name, which
    # NTAccount's lookup of a bare name finds on a domain member (FACTS.md "Account names").
    $sidType = [System.Security.Principal.SecurityIdentifier]
    if ($Identity -cmatch '^S-1-\d+(-\d+)+$') {
        # A SID as it is: the one way to name the ACE of an account that was deleted (its
        # name no longer translates; contract.is_sid).
        return (New-Object System.Security.Principal.SecurityIdentifier($Identity))
    }
    if ($Identity.StartsWith('.\', [System.StringComparison]::Ordinal)) {
        # ".\name" is this computer's account to LogonUser and IIS, but LookupAccountName
        # (NTAccount.Translate) knows no "." domain: name the computer.
        $Identity = "$env:COMPUTERNAME\" + $Identity.Substring(2)
    }
    if ($Identity.Contains('\') -or $Identity.Contains('@')) {
        try {
            return (New-Object System.Security.Principal.NTAccount($Identity)).Translate($sidType)
        } catch {
            throw (New-AgentError 'NotFound' "account '$Identity' does not exist" 0x80070534)
        }
    }
    try {
        return (New-Object System.Security.Principal.NTAccount("$env:COMPUTERNAME\$Identity")).Translate($sidType)
    } catch {
        $null = $_
    }
    $sid = $null
    try { $sid = (New-Object System.Security.Principal.NTAccount($Identity)).Translate($sidType) } catch { $sid = $null }
    # S-1-5-21-... are accounts of a machine or a domain: this computer's were tried above,
    # so one found now is a domain's. Well-known and built-in SIDs have no such part.
    if ($null -ne $sid -and -not $sid.Value.StartsWith('S-1-5-21-', [System.StringComparison]::Ordinal)) { return $sid }
    throw (New-AgentError 'NotFound' "no local account or group named '$Identity' (a domain account is written DOMAIN\$Identity)" 0x80070534)
}

function Invoke-AclGet($A) {
    $path = Get-RequiredString $A 'path'
    if (-not [System.IO.Directory]::Exists($path)) { return [ordered]@{ exists = $false; aces = @() } }
    $acl = Get-FolderAccess (New-Object System.IO.DirectoryInfo($path))
    $aces = New-List
    # By SID, each translated on its own: an ACE of a deleted account keeps its SID as its
    # identity (as Get-Acl shows it), and the others their names.
    foreach ($rule in $acl.GetAccessRules($true, $true, [System.Security.Principal.SecurityIdentifier])) {
        $sid = $rule.IdentityReference
        $identity = [string]$sid.Value
        try { $identity = [string]$sid.Translate([System.Security.Principal.NTAccount]).Value } catch { $null = $_ }
        [void]$aces.Add([ordered]@{
                identity = $identity
                sid = [string]$sid.Value
                rights = (Format-Rights $rule.FileSystemRights)
                type = [string]$rule.AccessControlType
                inherited = [bool]$rule.IsInherited
            })
    }
    return [ordered]@{ exists = $true; aces = $aces }
}

function Invoke-AclGrant($A) {
    $folder = Get-FolderOrFail (Get-RequiredString $A 'path')
    $sid = Resolve-Identity (Get-RequiredString $A 'identity')
    $rightsName = Get-RequiredString $A 'rights'
    if (-not $script:RightsByName.Contains($rightsName)) { throw (New-AgentError 'InvalidValue' "rights must be one of $($script:RightsByName.Keys -join ', ')" 0x8007000D) }
    $rights = $script:RightsByName[$rightsName]
    $inherit = [System.Security.AccessControl.InheritanceFlags]'ContainerInherit, ObjectInherit'
    # The DACL alone (Get-Acl/Set-Acl would rewrite owner and SACL too).
    $acl = Get-FolderAccess $folder
    $sync = -bnot [int64][System.Security.AccessControl.FileSystemRights]::Synchronize
    $mine = @($acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier]) |
        Where-Object { $_.IdentityReference -eq $sid -and $_.AccessControlType -eq 'Allow' })
    if ($mine.Count -eq 1 -and $mine[0].InheritanceFlags -eq $inherit -and $mine[0].PropagationFlags -eq 'None' -and
        (([int64]$mine[0].FileSystemRights -band $sync) -eq ([int64]$rights -band $sync))) {
        return [ordered]@{ changed = $false }
    }
    # SetAccessRule replaces the identity's explicit Allow rules: the folder ends with exactly one.
    $newRule = New-Object System.Security.AccessControl.FileSystemAccessRule($sid, $rights, $inherit, [System.Security.AccessControl.PropagationFlags]::None, [System.Security.AccessControl.AccessControlType]::Allow)
    $acl.SetAccessRule($newRule)
    Set-FolderAccess $folder $acl
    return [ordered]@{ changed = $true }
}

function Invoke-AclRevoke($A) {
    $folder = Get-FolderOrFail (Get-RequiredString $A 'path')
    $identity = Get-RequiredString $A 'identity'
    try { $sid = Resolve-Identity $identity } catch { return [ordered]@{ changed = $false } }
    $acl = Get-FolderAccess $folder
    $found = $false
    foreach ($rule in $acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])) {
        if ($rule.IdentityReference -eq $sid -and $rule.AccessControlType -eq 'Allow') { $found = $true }
    }
    if (-not $found) { return [ordered]@{ changed = $false } }
    $template = New-Object System.Security.AccessControl.FileSystemAccessRule($sid, [System.Security.AccessControl.FileSystemRights]::Read, [System.Security.AccessControl.AccessControlType]::Allow)
    $acl.RemoveAccessRuleAll($template)
    Set-FolderAccess $folder $acl
    return [ordered]@{ changed = $true }
}

# --- certificate mappings ----------------------------------------------------------------

function Invoke-MappingVerifyLogons($A) {
    $siteName = Get-RequiredString $A 'site'
    Assert-SectionFeature 'system.webServer/security/authentication/iisClientCertificateMappingAuthentication'
    $sm = New-ServerManager
    try {
        [void](Get-SiteOrFail $sm $siteName)
        $section = $sm.GetApplicationHostConfiguration().GetSection('system.webServer/security/authentication/iisClientCertificateMappingAuthentication', $siteName)
        $method = Format-AttrValue $section.GetAttributeValue('logonMethod') (Get-AttrSchema $section.Schema 'logonMethod')
        $logonType = $script:LogonTypes[$method]
        if ($null -eq $logonType) { $logonType = $script:LogonTypes['ClearText'] }
        $domain = [string]$section.GetAttributeValue('defaultLogonDomain')
        $skip = @{}
        foreach ($u in @(Get-Arg $A 'skip_users' @())) { $skip[(Get-LogonAccountKey ([string]$u))] = $true }
        # One logon per account and stored password (ordinal keys: passwords are case-sensitive).
        $tried = New-Object 'System.Collections.Generic.Dictionary[string,object]'
        $results = New-List
        $sets = @(@('one_to_one', 'oneToOneMappings', 'certificate'), @('many_to_one', 'manyToOneMappings', 'name'))
        foreach ($set in $sets) {
            foreach ($mapping in $section.GetCollection($set[1])) {
                $userName = [string]$mapping.GetAttributeValue('userName')
                if ($userName -eq '') { continue }
                $account = Get-LogonAccountKey $userName
                # Per mapping: a password this host cannot decrypt fails its own mapping
                # (NTE_BAD_DATA), not the whole op, and is not a wrong password.
                $password = $null
                $undecryptable = $false
                if (-not $skip.ContainsKey($account)) {
                    try {
                        $password = [string]$mapping.GetAttributeValue('password')
                        # Decrypted by IIS: redacted from any message, whatever its length.
                        Add-Secret $password
                    } catch {
                        $undecryptable = $true
                    }
                }
                if ($skip.ContainsKey($account)) {
                    $verdict = New-NotChecked
                } elseif ($undecryptable) {
                    $verdict = [ordered]@{ valid = $false; hresult = '0x80090005'; checked = $true }
                } else {
                    # Decrypted by IIS in this process only, handed to LogonUser, then dropped.
                    $triedKey = $account + [char]0 + $password
                    if ($tried.ContainsKey($triedKey)) {
                        $verdict = $tried[$triedKey]
                    } else {
                        $verdict = Invoke-GuardedLogon $userName $password $logonType $domain
                        $tried[$triedKey] = $verdict
                    }
                    $password = $null
                }
                [void]$results.Add([ordered]@{
                        kind = $set[0]
                        key = [string]$mapping.GetAttributeValue($set[2])
                        user_name = $userName
                        valid = $verdict.valid
                        hresult = $verdict.hresult
                        checked = $verdict.checked
                    })
            }
        }
        return [ordered]@{ results = $results }
    } finally {
        $sm.Dispose()
    }
}

# --- host facts --------------------------------------------------------------------------

function Get-PasswordPolicy {
    # The host's effective policy, as the SAM applies it to new passwords (FACTS.md "Password
    # policy facts"): the minimum length from the computer's WinNT domain object (what
    # NetUserModalsGet reads; the ",computer" object has no such property), complexity from
    # the security database, which only secedit exports. Group Policy writes both.
    $minLength = $null
    try { $minLength = [int](([ADSI]"WinNT://$env:COMPUTERNAME").Properties['MinPasswordLength'].Value) } catch { $minLength = $null }
    $complexity = $null
    # The agent's own folder: the account may have no TEMP (docs/real-host.md).
    $dir = Join-Path (Get-AgentTempDirectory) ('policy-' + [guid]::NewGuid().ToString('N'))
    try {
        [void][System.IO.Directory]::CreateDirectory($dir)
        $cfg = Join-Path $dir 'policy.inf'
        $ErrorActionPreference = 'Continue'
        $null = & "$env:windir\system32\secedit.exe" /export /cfg $cfg /areas SECURITYPOLICY /quiet 2>&1
        $ErrorActionPreference = 'Stop'
        if ($LASTEXITCODE -eq 0 -and (Test-Path -LiteralPath $cfg)) {
            # secedit writes UTF-16; [System Access] holds "Name = value" lines.
            foreach ($line in [System.IO.File]::ReadAllLines($cfg)) {
                if ($line -match '^\s*PasswordComplexity\s*=\s*(\d+)') { $complexity = ([int]$Matches[1] -ne 0) }
                if ($null -eq $minLength -and $line -match '^\s*MinimumPasswordLength\s*=\s*(\d+)') { $minLength = [int]$Matches[1] }
            }
        }
    } catch {
        $null = $_
    } finally {
        $ErrorActionPreference = 'Stop'
        Remove-Item -LiteralPath $dir -Recurse -Force -ErrorAction SilentlyContinue
    }
    if ($null -eq $minLength) {
        throw (New-AgentError 'AccessDenied' 'cannot read the host''s password policy (WinNT MinPasswordLength, secedit /export)' 0x80070005)
    }
    # Unreadable complexity: assume the rule on (the Windows Server default), so a password
    # the host would refuse is refused before anything is written.
    if ($null -eq $complexity) { $complexity = $true }
    return [ordered]@{ min_length = $minLength; complexity = [bool]$complexity }
}

function Invoke-HostFacts($A) {
    $cv = 'SOFTWARE\Microsoft\Windows NT\CurrentVersion'
    $build = [int](Get-RegValue $cv 'CurrentBuildNumber' '0')
    $major = Get-RegValue 'SOFTWARE\Microsoft\InetStp' 'MajorVersion'
    $iis = ''
    if ($null -ne $major) { $iis = "$major.$(Get-RegValue 'SOFTWARE\Microsoft\InetStp' 'MinorVersion' 0)" }
    $certAuth = $false
    if ($null -eq $script:MwaLoadError) { $certAuth = Test-WebCertAuthInstalled }
    # TLS 1.3 is on by default from Windows Server 2022 (build 20348) unless turned off.
    $tls13Key = "$script:SchannelKey\Protocols\TLS 1.3\Server"
    $tls13 = $build -ge 20348
    $enabled = Get-RegValue $tls13Key 'Enabled'
    $disabledByDefault = Get-RegValue $tls13Key 'DisabledByDefault'
    if ($null -ne $enabled) { $tls13 = ([int64]$enabled -ne 0) }
    if ($null -ne $disabledByDefault -and [int64]$disabledByDefault -ne 0) { $tls13 = $false }
    $policy = Get-PasswordPolicy
    return [ordered]@{
        computer_name = [string]$env:COMPUTERNAME
        os_caption = [string](Get-RegValue $cv 'ProductName' 'Windows')
        os_build = $build
        iis_version = $iis
        web_cert_auth_installed = [bool]$certAuth
        client_auth_trust_mode = [int](Get-RegValue $script:SchannelKey 'ClientAuthTrustMode' 0)
        send_trusted_issuer_list = [int](Get-RegValue $script:SchannelKey 'SendTrustedIssuerList' 0)
        tls13_enabled = [bool]$tls13
        password_policy = $policy
        lockout_policy = (Get-LockoutPolicy)
    }
}

# --- dispatch ----------------------------------------------------------------------------

$Handlers = @{
    'host.facts' = { param($A) Invoke-HostFacts $A }
    'site.list' = { param($A) Invoke-SiteList $A }
    'site.log_tail' = { param($A) Invoke-SiteLogTail $A }
    'config.get' = { param($A) Invoke-ConfigGet $A }
    'config.set' = { param($A) Invoke-ConfigSet $A }
    'config.clear' = { param($A) Invoke-ConfigClear $A }
    'binding.set' = { param($A) Invoke-BindingSet $A }
    'binding.remove' = { param($A) Invoke-BindingRemove $A }
    'cert.list' = { param($A) Invoke-CertList $A }
    'cert.import' = { param($A) Invoke-CertImport $A }
    'cert.remove' = { param($A) Invoke-CertRemove $A }
    'cert.revocation' = { param($A) Invoke-CertRevocation $A }
    'user.get' = { param($A) Invoke-UserGet $A }
    'user.set' = { param($A) Invoke-UserSet $A }
    'user.delete' = { param($A) Invoke-UserDelete $A }
    'user.verify_password' = { param($A) Invoke-UserVerifyPassword $A }
    'group.add_member' = { param($A) Invoke-GroupAddMember $A }
    'group.remove_member' = { param($A) Invoke-GroupRemoveMember $A }
    'acl.get' = { param($A) Invoke-AclGet $A }
    'acl.grant' = { param($A) Invoke-AclGrant $A }
    'acl.revoke' = { param($A) Invoke-AclRevoke $A }
    'mapping.verify_logons' = { param($A) Invoke-MappingVerifyLogons $A }
}

# Ops that change the host (contract.OPS[...].writes): a batch with one of them holds the
# host's write lock.
$script:WriteOps = @('config.set', 'config.clear', 'binding.set', 'binding.remove', 'cert.import', 'cert.remove', 'user.set', 'user.delete', 'group.add_member', 'group.remove_member', 'acl.grant', 'acl.revoke')
$script:HostLockSeconds = 120

function Enter-HostLock {
    # Microsoft.Web.Administration commits optimistically: two agents committing at once get
    # "Cannot commit configuration changes because the file has changed on disk", and Pulumi
    # applies resources in parallel. One host-wide named mutex serialises this project's
    # write batches (other tools' writes are met by the retry in Invoke-Request).
    $mutex = New-Object System.Threading.Mutex($false, 'Global\iis-clientcert-agent')
    $acquired = $false
    try {
        $acquired = $mutex.WaitOne([TimeSpan]::FromSeconds($script:HostLockSeconds))
    } catch {
        # The last holder died mid-batch: the mutex is ours now, and its batch, like any
        # batch cut short, is finished by the next run (every op converges).
        if ((Get-InnermostException $_.Exception) -isnot [System.Threading.AbandonedMutexException]) { throw }
        $acquired = $true
    }
    if (-not $acquired) {
        $mutex.Dispose()
        throw (New-AgentError 'Conflict' "another iis-clientcert agent has held this host's write lock (Global\iis-clientcert-agent) for over $($script:HostLockSeconds) s")
    }
    return $mutex
}

function Exit-HostLock($Mutex) {
    if ($null -eq $Mutex) { return }
    $Mutex.ReleaseMutex()
    $Mutex.Dispose()
}

function Test-CommitConflict($Exception) {
    # Microsoft.Web.Administration reports a commit over a file that changed since it was
    # read as FileLoadException; a locked section (0x80070021) comes as the same type and
    # is no conflict. Its HRESULT is not documented (docs/real-host.md): the type decides.
    if ($Exception -isnot [System.IO.FileLoadException]) { return $false }
    return ((ConvertTo-HResult32 $Exception.HResult) -ne (ConvertTo-HResult32 0x80070021))
}

function New-ErrorResponse($Op, $Index, [string]$Code, [string]$Message, $HResult, $Results) {
    return [ordered]@{
        ok = $false
        results = $Results
        error = [ordered]@{ op = $Op; index = $Index; code = $Code; hresult = (Format-HResult $HResult); message = (Hide-Secrets $Message) }
    }
}

function Invoke-Request([string]$Json) {
    $results = New-List
    try {
        $request = [AgentJson]::Parse($Json)
    } catch {
        return (New-ErrorResponse $null $null 'BadRequest' 'the request is not JSON' $null $results)
    }
    if ($request -isnot [System.Collections.IDictionary] -or -not $request.ContainsKey('version') -or $request['version'] -ne 1) {
        return (New-ErrorResponse $null $null 'BadRequest' 'unsupported protocol version (this agent speaks 1)' $null $results)
    }
    if (-not $request.ContainsKey('ops') -or $request['ops'] -isnot [System.Array] -or @($request['ops']).Count -eq 0) {
        return (New-ErrorResponse $null $null 'BadRequest' 'the request carries no ops' $null $results)
    }
    $ops = @($request['ops'])
    Reset-LogonState
    $firstWrite = -1
    for ($index = $ops.Count - 1; $index -ge 0; $index--) {
        $entry = $ops[$index]
        if ($entry -is [System.Collections.IDictionary] -and $entry.ContainsKey('op') -and $script:WriteOps -contains [string]$entry['op']) { $firstWrite = $index }
    }
    $lock = $null
    if ($firstWrite -ge 0) {
        try {
            $lock = Enter-HostLock
        } catch {
            $exception = Get-InnermostException $_.Exception
            return (New-ErrorResponse ([string]$ops[$firstWrite]['op']) $firstWrite 'Conflict' $exception.Message $null $results)
        }
    }
    try {
        for ($index = 0; $index -lt $ops.Count; $index++) {
            $entry = $ops[$index]
            $name = $null
            if ($entry -is [System.Collections.IDictionary] -and $entry.ContainsKey('op')) { $name = [string]$entry['op'] }
            $opArgs = $null
            if ($entry -is [System.Collections.IDictionary] -and $entry.ContainsKey('args')) { $opArgs = $entry['args'] }
            if ($null -eq $opArgs) { $opArgs = New-Object 'System.Collections.Generic.Dictionary[string,object]' }
            if ($null -eq $name -or -not $Handlers.ContainsKey($name) -or $opArgs -isnot [System.Collections.IDictionary]) {
                return (New-ErrorResponse $name $index 'BadRequest' "unknown op '$name'" $null $results)
            }
            $script:Secrets.Clear()
            foreach ($k in @('password', 'pfx_password', 'pfx_b64')) {
                if ($opArgs.ContainsKey($k) -and $opArgs[$k] -is [string] -and $opArgs[$k].Length -gt 0) { $script:Secrets.Add($opArgs[$k]) }
            }
            if ($opArgs.ContainsKey('element')) { Add-ElementSecrets $opArgs['element'] $script:Secrets }
            $attempt = 0
            while ($true) {
                try {
                    # A handler returns one result object; take the last in case a call leaked output.
                    $out = @(& $Handlers[$name] $opArgs)
                    [void]$results.Add($out[$out.Count - 1])
                    break
                } catch {
                    $exception = Get-InnermostException $_.Exception
                    if ($attempt -eq 0 -and (Test-CommitConflict $exception)) {
                        # Another writer (IIS Manager, appcmd) committed since this op read the
                        # configuration: run the op once more. It opens a new ServerManager,
                        # so it reads the file as it is now, and does only what is still needed.
                        $attempt++
                        continue
                    }
                    if ($exception.Data.Contains('AgentCode')) {
                        $code = [string]$exception.Data['AgentCode']
                        $hresult = $null
                        if ($exception.Data.Contains('AgentHResult')) { $hresult = $exception.Data['AgentHResult'] }
                    } else {
                        $hresult = ConvertTo-HResult32 $exception.HResult
                        $code = Get-CodeForHResult $hresult
                        if (Test-CommitConflict $exception) { $code = 'Conflict' }
                    }
                    return (New-ErrorResponse $name $index $code $exception.Message $hresult $results)
                }
            }
        }
    } finally {
        Exit-HostLock $lock
    }
    return [ordered]@{ ok = $true; results = $results }
}

$script:Utf8 = New-Object System.Text.UTF8Encoding($false)
$script:RequestTag = 'iis-clientcert-request '

# One request per stdin line, until stdin ends (the client ends it, or WinRS closes it when
# the shell goes).
while ($true) {
    $line = $Reader.ReadLine()
    if ($null -eq $line) { break }
    if ($line.Length -eq 0) { continue }
    $id = '0'
    $json = $null
    if ($line.StartsWith($script:RequestTag, [StringComparison]::Ordinal)) {
        $rest = $line.Substring($script:RequestTag.Length)
        $space = $rest.IndexOf([char]' ')
        if ($space -gt 0 -and $rest.Substring(0, $space) -match '^[0-9]{1,18}$') {
            $id = $rest.Substring(0, $space)
            $json = $rest.Substring($space + 1)
        }
    }
    try {
        if ($null -eq $json) {
            $response = New-ErrorResponse $null $null 'BadRequest' 'not a request frame' $null (New-List)
        } else {
            $response = Invoke-Request $json
        }
    } catch {
        # The error handler must not fail in turn: whatever goes wrong here, Write-AgentOutput
        # still writes a contract error result (ConvertTo-ResponseText).
        $response = $null
        try {
            $exception = Get-InnermostException $_.Exception
            $response = New-ErrorResponse $null $null 'Fault' $exception.Message $exception.HResult (New-List)
        } catch {
            $response = $null
        }
    } finally {
        Remove-AgentTempDirectory
    }
    Write-AgentOutput $id $response
}
