# iis-clientcert agent: runs one batch of contract ops (providers/contract.py) on an IIS host.
#
# Started by the constant bootstrap (contract.BOOTSTRAP), which passes the JSON request as
# $RequestJson. Values, secrets included, only ever arrive here as JSON data: nothing in
# this script is built from them, and nothing here writes them anywhere (no command line,
# no log, no output). Output is one JSON document on stdout, nothing else.
#
# Windows PowerShell 5.1 on Windows Server 2016-2025 with IIS 10. Microsoft.Web.Administration
# is loaded directly: importing the WebAdministration module costs seconds per command.
param([string]$RequestJson)

Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'

Add-Type -AssemblyName System.Web
Add-Type -AssemblyName System.Web.Extensions

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

function Get-CodeForHResult($HResult) {
    $h = ConvertTo-HResult32 $HResult
    if ($h -eq 0x80070021) { return 'Locked' }
    if ($h -eq 0x80070005) { return 'AccessDenied' }
    if ($h -eq 0x8007052E) { return 'LogonFailure' }
    if ($h -eq 0x80070057 -or $h -eq 0x8007000D) { return 'InvalidValue' }
    if (@(0x80070002, 0x80070003, 0x80070490, 0x800708AC, 0x800708AD, 0x80070534,
            0x8007056B, 0x80092004, 0x80070035) -contains $h) { return 'NotFound' }
    if (@(0x800700B7, 0x800708B0, 0x80070562, 0x800708B7) -contains $h) { return 'DuplicateKey' }
    if (@(0x800708C5, 0x800708C4, 0x8007052D, 0x8007089A, 0x80070523) -contains $h) { return 'PolicyViolation' }
    if (@(0x80093102, 0x8009310B, 0x80092002, 0x80070056, 0x80092009, 0x8009200D) -contains $h) { return 'BadCertificate' }
    return 'Fault'
}

function Hide-Secrets([string]$Text) {
    if ($null -eq $Text) { return '' }
    foreach ($s in $script:Secrets) { $Text = $Text.Replace($s, 'REDACTED') }
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
            if ($k -like '*password*' -and $v -is [string] -and $v.Length -ge 4) { $List.Add($v) }
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
# A small writer: ConvertTo-Json in 5.1 flattens one-element arrays and truncates depth.

function Write-JsonValue([System.Text.StringBuilder]$Sb, $Value) {
    if ($null -eq $Value) { [void]$Sb.Append('null'); return }
    $v = $Value.PSObject.BaseObject
    if ($v -is [bool]) {
        if ($v) { [void]$Sb.Append('true') } else { [void]$Sb.Append('false') }
        return
    }
    if ($v -is [string] -or $v -is [char] -or $v -is [guid] -or $v -is [enum]) {
        [void]$Sb.Append('"').Append([System.Web.HttpUtility]::JavaScriptStringEncode([string]$v)).Append('"')
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
            [void]$Sb.Append('"').Append([System.Web.HttpUtility]::JavaScriptStringEncode([string]$key)).Append('":')
            Write-JsonValue $Sb $v[$key]
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
            Write-JsonValue $Sb $item
        }
        [void]$Sb.Append(']')
        return
    }
    [void]$Sb.Append('"').Append([System.Web.HttpUtility]::JavaScriptStringEncode([string]$v)).Append('"')
}

function Write-AgentOutput($Response) {
    $sb = New-Object System.Text.StringBuilder
    Write-JsonValue $sb $Response
    # Raw UTF-8 bytes: independent of the console code page of the WinRM shell.
    $bytes = (New-Object System.Text.UTF8Encoding($false)).GetBytes($sb.ToString())
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

function Get-ApphostXml([string]$Path = $script:ApphostPath) {
    $doc = New-Object System.Xml.XmlDocument
    $doc.Load($Path)
    return , $doc
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
        $cut = $loc.LastIndexOf('/')
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

function Add-EncryptedValues($Element, $Schema, $List) {
    $attrs = Get-ElementPart $Element 'attributes'
    foreach ($name in @($attrs.Keys)) {
        $s = Get-AttrSchema $Schema $name
        $v = [string]$attrs[$name]
        if ($null -ne $s -and $s.IsEncrypted -and (Test-EncryptedForm $v) -and -not $List.Contains($v)) { [void]$List.Add($v) }
    }
    $children = Get-ElementPart $Element 'children'
    foreach ($name in @($children.Keys)) { Add-EncryptedValues $children[$name] (Get-ChildSchema $Schema $name) $List }
    $names = Get-CollectionNames $Schema
    foreach ($item in (Get-ElementPart $Element 'items')) {
        $itemSchema = $null
        if ($names.isCollection) { $itemSchema = $Schema.CollectionSchema.GetAddElementSchema($names.add[0]) }
        Add-EncryptedValues $item $itemSchema $List
    }
}

function Unprotect-IisValues($Values) {
    # Decrypts [enc:...:enc] values with this host's key, through IIS's own config system:
    # a copy of applicationHost.config (holding only ciphertext) gets one location per value
    # and is read with a read-only ServerManager. No plain value is ever written anywhere.
    $map = @{}
    if (@($Values).Count -eq 0) { return $map }
    $doc = Get-ApphostXml
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
    $dir = Join-Path ([System.IO.Path]::GetTempPath()) ('iis-clientcert-' + [guid]::NewGuid().ToString('N'))
    [void][System.IO.Directory]::CreateDirectory($dir)
    try {
        $copy = Join-Path $dir 'applicationHost.config'
        $doc.Save($copy)
        $sm = New-Object Microsoft.Web.Administration.ServerManager($copy)
        try {
            $cfg = $sm.GetApplicationHostConfiguration()
            for ($j = 0; $j -lt $paths.Count; $j++) {
                $section = $cfg.GetSection('system.webServer/security/authentication/anonymousAuthentication', $paths[$j])
                try {
                    $map[[string]@($Values)[$j]] = [string]$section.GetAttributeValue('password')
                } catch {
                    throw (New-AgentError 'InvalidValue' 'an encrypted value cannot be decrypted with this host''s key (it was encrypted on another host)' 0x8007000D)
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
    return ($Name -match '^(lockAttributes|lockAllAttributesExcept|lockElements|lockAllElementsExcept|lockItem|configSource)$')
}

function Get-ElementSignature($Element, $Schema, $Plain) {
    # A canonical text of an Element for comparison. $Plain maps encrypted values to their
    # plain text when given (the signature then holds secrets: it never leaves this process).
    $sb = New-Object System.Text.StringBuilder
    $attrs = Get-ElementPart $Element 'attributes'
    foreach ($name in @($attrs.Keys | Sort-Object)) {
        $s = Get-AttrSchema $Schema $name
        if ($null -eq $s -and $null -ne $Schema -and -not (Test-MetaAttribute $name)) {
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
            $plain = [string]$attr.Value
            $value = ''
            if ($plain -ne '') {
                $value = '[enc:Unknown::enc]'
                foreach ($c in $Candidates) {
                    if ($null -ne $c -and $c.HasAttribute($attr.Name)) {
                        $value = $c.GetAttribute($attr.Name)
                        if (-not (Test-EncryptedForm $value)) { $value = '[enc:Unencrypted::enc]' }
                        break
                    }
                }
            }
            $plain = $null
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
    $cut = $loc.IndexOf('/')
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
        if ($section.IsLocked) {
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

function Test-WebCertAuthInstalled {
    $sm = New-ServerManager
    try {
        $modules = $sm.GetApplicationHostConfiguration().GetSection('system.webServer/globalModules').GetCollection()
        foreach ($m in $modules) {
            if ([string]$m.GetAttributeValue('name') -eq 'IISCertificateMappingAuthenticationModule') { return $true }
        }
    } finally {
        $sm.Dispose()
    }
    return (Test-Path -LiteralPath (Join-Path $env:windir 'system32\inetsrv\iiscertmap.dll'))
}

function Assert-SectionFeature([string]$SectionName) {
    if ($SectionName.Trim('/').StartsWith('system.applicationHost/', [System.StringComparison]::OrdinalIgnoreCase)) {
        throw (New-AgentError 'InvalidValue' "$SectionName is managed with site.list and binding.set/remove" 0x8007000D)
    }
    if ($SectionName -eq 'system.webServer/security/authentication/iisClientCertificateMappingAuthentication' -and -not (Test-WebCertAuthInstalled)) {
        throw (New-AgentError 'FeatureMissing' 'the Windows feature Web-Cert-Auth (IIS Client Certificate Mapping Authentication) is not installed: Install-WindowsFeature Web-Cert-Auth')
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
        Add-EncryptedValues $desired $schema $encrypted
        Add-EncryptedValues $current $schema $encrypted
        if ($encrypted.Count -gt 0) {
            # Compare plain text: an encrypted value differs on every write.
            $plain = Unprotect-IisValues $encrypted
            if ((Get-ElementSignature $desired $schema $plain) -ceq (Get-ElementSignature $current $schema $plain)) {
                return [ordered]@{ changed = $false }
            }
        }
        # Authoritative: drop what this location holds, then write the element afresh.
        $section.RevertToParent()
        Set-ConfigElement $section $desired $schema $plain
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

function Get-SslEndpoint([string]$BindingInformation, [int]$SslFlags) {
    # HTTP.sys keys of an IIS https binding "ip:port:host": SNI -> host:port, else ip:port.
    $parts = $BindingInformation.Split(':')
    if ($parts.Count -lt 3) { throw (New-AgentError 'InvalidValue' "binding information '$BindingInformation' is not IP:PORT:HOST" 0x8007000D) }
    $hostName = $parts[$parts.Count - 1]
    $port = $parts[$parts.Count - 2]
    $ip = ($parts[0..($parts.Count - 3)] -join ':')
    if (($SslFlags -band 1) -ne 0) {
        return @{ kind = 'hostnameport'; key = "$($hostName):$port"; regKey = "$script:HttpParamsKey\SslSniBindingInfo\$($hostName):$port" }
    }
    if ($ip -eq '*' -or $ip -eq '') { $ip = '0.0.0.0' }
    return @{ kind = 'ipport'; key = "$($ip):$port"; regKey = "$script:HttpParamsKey\SslBindingInfo\$($ip):$port" }
}

function Get-HttpSslBinding($Endpoint) {
    $hash = Get-RegValue $Endpoint.regKey 'SslCertHash'
    if ($null -eq $hash) { return $null }
    $flags = [int64](Get-RegValue $Endpoint.regKey 'DefaultFlags' 0)
    return @{
        hash = ([System.BitConverter]::ToString([byte[]]$hash)).Replace('-', '')
        store = [string](Get-RegValue $Endpoint.regKey 'SslCertStoreName' 'MY')
        # HTTP_SERVICE_CONFIG_SSL_FLAG_NEGOTIATE_CLIENT_CERT
        negotiate = (($flags -band 2) -ne 0)
    }
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
                if ($b.Protocol -eq 'https') {
                    $ssl = $null
                    try { $ssl = Get-HttpSslBinding (Get-SslEndpoint $b.BindingInformation $flags) } catch { $ssl = $null }
                    if ($null -ne $ssl) {
                        $hash = $ssl.hash
                        $store = $ssl.store
                        $negotiate = $ssl.negotiate
                    }
                }
                [void]$bindings.Add([ordered]@{
                        protocol = [string]$b.Protocol
                        binding_information = [string]$b.BindingInformation
                        ssl_flags = $flags
                        certificate_hash = $hash
                        certificate_store = $store
                        client_cert_negotiation = $negotiate
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
        throw (New-AgentError 'Fault' ("netsh $($Arguments[0..2] -join ' ') failed: " + $output.Trim()))
    }
}

function Invoke-BindingSet($A) {
    $siteName = Get-RequiredString $A 'site'
    $info = Get-RequiredString $A 'binding_information'
    $flags = [int](Get-RequiredArg $A 'ssl_flags')
    $hash = ConvertTo-Thumbprint (Get-RequiredString $A 'certificate_hash')
    $storeName = Get-RequiredString $A 'certificate_store'
    $negotiate = [bool](Get-RequiredArg $A 'client_cert_negotiation')
    $endpoint = Get-SslEndpoint $info $flags
    $certificate = Find-Certificate $storeName $hash
    if ($null -eq $certificate) {
        throw (New-AgentError 'NotFound' "certificate $hash is not in LocalMachine\$storeName" 0x80092004)
    }
    if (-not $certificate.HasPrivateKey) {
        # What netsh answers: ERROR_NO_SUCH_LOGON_SESSION.
        throw (New-AgentError 'BadCertificate' "SSL Certificate add failed: the certificate $hash has no private key" 0x80070520)
    }
    $created = $false
    $changed = $false
    $sm = New-ServerManager
    try {
        $site = Get-SiteOrFail $sm $siteName
        $existing = $null
        foreach ($b in $site.Bindings) {
            if ($b.Protocol -eq 'https' -and [string]::Equals($b.BindingInformation, $info, [System.StringComparison]::OrdinalIgnoreCase)) { $existing = $b }
        }
        $needsWrite = $true
        if ($null -ne $existing) {
            $currentHash = ''
            if ($null -ne $existing.CertificateHash) { $currentHash = ([System.BitConverter]::ToString($existing.CertificateHash)).Replace('-', '') }
            $needsWrite = -not ($currentHash -eq $hash -and (Get-BindingFlags $existing) -eq $flags -and
                [string]::Equals([string]$existing.CertificateStoreName, $storeName, [System.StringComparison]::OrdinalIgnoreCase))
        } else {
            $created = $true
        }
        if ($needsWrite) {
            if ($null -ne $existing) { $site.Bindings.Remove($existing) }
            # Microsoft.Web.Administration also writes the HTTP.sys certificate binding.
            $binding = $site.Bindings.Add($info, (ConvertTo-Bytes $hash), $storeName)
            $binding.SetAttributeValue('sslFlags', $flags)
            $sm.CommitChanges()
            $changed = $true
        }
    } finally {
        $sm.Dispose()
    }
    $ssl = Get-HttpSslBinding $endpoint
    $mode = 'disable'
    if ($negotiate) { $mode = 'enable' }
    $netshArgs = @('http', 'update', 'sslcert', "$($endpoint.kind)=$($endpoint.key)", "certhash=$hash", "appid=$script:IisAppId", "certstorename=$storeName", "clientcertnegotiation=$mode")
    if ($null -eq $ssl) {
        $netshArgs[1] = 'add'
        Invoke-Netsh $netshArgs
        $changed = $true
    } elseif ($ssl.hash -ne $hash -or $ssl.negotiate -ne $negotiate) {
        Invoke-Netsh $netshArgs
        $changed = $true
    }
    return [ordered]@{ changed = $changed; created = $created }
}

function Invoke-BindingRemove($A) {
    $siteName = Get-RequiredString $A 'site'
    $info = Get-RequiredString $A 'binding_information'
    $sm = New-ServerManager
    $endpoint = $null
    $stillUsed = $false
    try {
        $site = Get-SiteOrFail $sm $siteName
        $existing = $null
        foreach ($b in $site.Bindings) {
            if ($b.Protocol -eq 'https' -and [string]::Equals($b.BindingInformation, $info, [System.StringComparison]::OrdinalIgnoreCase)) { $existing = $b }
        }
        if ($null -eq $existing) { return [ordered]@{ changed = $false } }
        $endpoint = Get-SslEndpoint $info (Get-BindingFlags $existing)
        $site.Bindings.Remove($existing)
        $sm.CommitChanges()
        foreach ($s in $sm.Sites) {
            foreach ($b in $s.Bindings) {
                if ($b.Protocol -eq 'https' -and (Get-SslEndpoint $b.BindingInformation (Get-BindingFlags $b)).key -eq $endpoint.key) { $stillUsed = $true }
            }
        }
    } finally {
        $sm.Dispose()
    }
    if (-not $stillUsed -and $null -ne (Get-HttpSslBinding $endpoint)) {
        Invoke-Netsh @('http', 'delete', 'sslcert', "$($endpoint.kind)=$($endpoint.key)")
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

function Invoke-CertImport($A) {
    $storeName = Get-RequiredString $A 'store'
    $der = Get-Arg $A 'der_b64'
    $pfx = Get-Arg $A 'pfx_b64'
    if (($null -eq $der) -eq ($null -eq $pfx)) { throw (New-AgentError 'BadRequest' 'give exactly one of der_b64 and pfx_b64') }
    $X509 = 'System.Security.Cryptography.X509Certificates'
    if ($null -ne $der) {
        $cert = New-Object "$X509.X509Certificate2" (, (ConvertFrom-Base64Arg ([string]$der) 'der_b64'))
    } else {
        $flags = [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::MachineKeySet -bor
        [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::PersistKeySet
        if ([bool](Get-Arg $A 'exportable' $false)) {
            $flags = $flags -bor [System.Security.Cryptography.X509Certificates.X509KeyStorageFlags]::Exportable
        }
        $bytes = ConvertFrom-Base64Arg ([string]$pfx) 'pfx_b64'
        $collection = New-Object "$X509.X509Certificate2Collection"
        # The password goes straight from the JSON request to the import API.
        $collection.Import($bytes, [string](Get-Arg $A 'pfx_password' ''), $flags)
        $cert = $null
        foreach ($c in $collection) { if ($c.HasPrivateKey) { $cert = $c; break } }
        if ($null -eq $cert) { throw (New-AgentError 'BadCertificate' 'the PFX holds no private key' 0x8009200D) }
    }
    $thumbprint = $cert.Thumbprint.ToUpperInvariant()
    $store = Open-Store $storeName $true
    try {
        $found = $store.Certificates.Find([System.Security.Cryptography.X509Certificates.X509FindType]::FindByThumbprint, $thumbprint, $false)
        if ($found.Count -gt 0 -and ($found[0].HasPrivateKey -or -not $cert.HasPrivateKey)) {
            return [ordered]@{ thumbprint = $thumbprint; added = $false }
        }
        $store.Add($cert)
        return [ordered]@{ thumbprint = $thumbprint; added = $true }
    } finally {
        $store.Close()
    }
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
        $inner = Get-InnermostException $_.Exception
        $h = ConvertTo-HResult32 $inner.HResult
        if ($h -eq 0x800708AD -or $h -eq 0x80070035 -or $h -eq 0x80005000) { return $null }
        throw
    }
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
        return [ordered]@{ exists = $false; name = $name; full_name = ''; description = ''; disabled = $false; password_never_expires = $false; user_cannot_change_password = $false; groups = @(); bad_password_count = 0; locked_out = $false }
    }
    $flags = [int64](Get-AdsiValue $user 'UserFlags' 0)
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
    }
}

$script:LogonSource = @'
using System;
using System.Runtime.InteropServices;
public static class IisClientCertLogon {
    [DllImport("advapi32.dll", SetLastError = true, CharSet = CharSet.Unicode)]
    private static extern bool LogonUserW(string user, string domain, string password, int logonType, int provider, out IntPtr token);
    [DllImport("kernel32.dll", SetLastError = true)]
    private static extern bool CloseHandle(IntPtr handle);
    public static int TryLogon(string user, string domain, string password, int logonType) {
        IntPtr token;
        if (LogonUserW(user, domain, password, logonType, 0, out token)) { CloseHandle(token); return 0; }
        return Marshal.GetLastWin32Error();
    }
}
'@

function Test-Logon([string]$UserName, [string]$Password, [int]$LogonType = 3, [string]$DefaultDomain = '.') {
    # The Win32 error of LogonUser (0 = success). The password is a .NET string argument,
    # never a command line. Logon types: 2 interactive, 3 network, 4 batch, 8 cleartext.
    # Callers go through Invoke-GuardedLogon: every wrong password counts towards lockout.
    if ($null -eq ('IisClientCertLogon' -as [type])) { Add-Type -TypeDefinition $script:LogonSource }
    $parts = Split-LogonName $UserName $DefaultDomain
    return [IisClientCertLogon]::TryLogon($parts[1], $parts[0], $Password, $LogonType)
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
        $domain = $UserName.Substring(0, $UserName.IndexOf('\'))
        $user = $UserName.Substring($UserName.IndexOf('\') + 1)
    } elseif ($UserName.Contains('@')) {
        $domain = $null
    }
    return , @($domain, $user)
}

function Get-LogonAccountKey([string]$UserName) {
    # contract.logon_account_key: the name without domain or UPN suffix, lower case.
    $name = $UserName.Substring($UserName.LastIndexOf('\') + 1)
    $at = $name.IndexOf('@')
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

function Get-FolderOrFail([string]$Path) {
    if (-not [System.IO.Directory]::Exists($Path)) {
        throw (New-AgentError 'NotFound' "folder '$Path' does not exist" 0x80070003)
    }
    return (New-Object System.IO.DirectoryInfo($Path))
}

function Resolve-Identity([string]$Identity) {
    # A bare name is a local account; a SID of an unknown name means NotFound.
    $name = $Identity
    if (-not $name.Contains('\') -and -not $name.Contains('@')) { $name = "$env:COMPUTERNAME\$Identity" }
    $account = New-Object System.Security.Principal.NTAccount($name)
    try {
        return $account.Translate([System.Security.Principal.SecurityIdentifier])
    } catch {
        $fallback = New-Object System.Security.Principal.NTAccount($Identity)
        try {
            return $fallback.Translate([System.Security.Principal.SecurityIdentifier])
        } catch {
            throw (New-AgentError 'NotFound' "account '$Identity' does not exist" 0x80070534)
        }
    }
}

function Invoke-AclGet($A) {
    $path = Get-RequiredString $A 'path'
    if (-not [System.IO.Directory]::Exists($path)) { return [ordered]@{ exists = $false; aces = @() } }
    $acl = (New-Object System.IO.DirectoryInfo($path)).GetAccessControl([System.Security.AccessControl.AccessControlSections]::Access)
    $aces = New-List
    foreach ($rule in $acl.GetAccessRules($true, $true, [System.Security.Principal.NTAccount])) {
        [void]$aces.Add([ordered]@{
                identity = [string]$rule.IdentityReference.Value
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
    # GetAccessControl/SetAccessControl(Access) = Get-Acl/Set-Acl without rewriting owner/SACL.
    $acl = $folder.GetAccessControl([System.Security.AccessControl.AccessControlSections]::Access)
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
    $folder.SetAccessControl($acl)
    return [ordered]@{ changed = $true }
}

function Invoke-AclRevoke($A) {
    $folder = Get-FolderOrFail (Get-RequiredString $A 'path')
    $identity = Get-RequiredString $A 'identity'
    try { $sid = Resolve-Identity $identity } catch { return [ordered]@{ changed = $false } }
    $acl = $folder.GetAccessControl([System.Security.AccessControl.AccessControlSections]::Access)
    $found = $false
    foreach ($rule in $acl.GetAccessRules($true, $false, [System.Security.Principal.SecurityIdentifier])) {
        if ($rule.IdentityReference -eq $sid -and $rule.AccessControlType -eq 'Allow') { $found = $true }
    }
    if (-not $found) { return [ordered]@{ changed = $false } }
    $template = New-Object System.Security.AccessControl.FileSystemAccessRule($sid, [System.Security.AccessControl.FileSystemRights]::Read, [System.Security.AccessControl.AccessControlType]::Allow)
    $acl.RemoveAccessRuleAll($template)
    $folder.SetAccessControl($acl)
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
                if ($skip.ContainsKey($account)) {
                    $verdict = New-NotChecked
                } else {
                    # Decrypted by IIS in this process only, handed to LogonUser, then dropped.
                    $password = [string]$mapping.GetAttributeValue('password')
                    $triedKey = $account + [char]0 + $password
                    if ($tried.ContainsKey($triedKey)) {
                        $verdict = $tried[$triedKey]
                    } else {
                        $verdict = Invoke-GuardedLogon $userName $password $logonType $domain
                        $tried[$triedKey] = $verdict
                    }
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
    $minLength = 0
    try { $minLength = [int]((Get-Computer).Properties['MinPasswordLength'].Value) } catch { $minLength = 0 }
    return [ordered]@{
        computer_name = [string]$env:COMPUTERNAME
        os_caption = [string](Get-RegValue $cv 'ProductName' 'Windows')
        os_build = $build
        iis_version = $iis
        web_cert_auth_installed = [bool]$certAuth
        client_auth_trust_mode = [int](Get-RegValue $script:SchannelKey 'ClientAuthTrustMode' 0)
        send_trusted_issuer_list = [int](Get-RegValue $script:SchannelKey 'SendTrustedIssuerList' 0)
        tls13_enabled = [bool]$tls13
        # Complexity lives in the security policy database (secedit): assumed on.
        password_policy = [ordered]@{ min_length = $minLength; complexity = $true }
        lockout_policy = (Get-LockoutPolicy)
    }
}

# --- dispatch ----------------------------------------------------------------------------

$Handlers = @{
    'host.facts' = { param($A) Invoke-HostFacts $A }
    'site.list' = { param($A) Invoke-SiteList $A }
    'config.get' = { param($A) Invoke-ConfigGet $A }
    'config.set' = { param($A) Invoke-ConfigSet $A }
    'config.clear' = { param($A) Invoke-ConfigClear $A }
    'binding.set' = { param($A) Invoke-BindingSet $A }
    'binding.remove' = { param($A) Invoke-BindingRemove $A }
    'cert.list' = { param($A) Invoke-CertList $A }
    'cert.import' = { param($A) Invoke-CertImport $A }
    'cert.remove' = { param($A) Invoke-CertRemove $A }
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

function New-ErrorResponse($Op, $Index, [string]$Code, [string]$Message, $HResult, $Results) {
    return [ordered]@{
        ok = $false
        results = $Results
        error = [ordered]@{ op = $Op; index = $Index; code = $Code; hresult = (Format-HResult $HResult); message = (Hide-Secrets $Message) }
    }
}

function Invoke-Request([string]$Json) {
    $results = New-List
    $serializer = New-Object System.Web.Script.Serialization.JavaScriptSerializer
    $serializer.MaxJsonLength = [int]::MaxValue
    try {
        $request = $serializer.DeserializeObject($Json)
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
            if ($opArgs.ContainsKey($k) -and $opArgs[$k] -is [string] -and $opArgs[$k].Length -ge 4) { $script:Secrets.Add($opArgs[$k]) }
        }
        if ($opArgs.ContainsKey('element')) { Add-ElementSecrets $opArgs['element'] $script:Secrets }
        try {
            # A handler returns one result object; take the last in case a call leaked output.
            $out = @(& $Handlers[$name] $opArgs)
            [void]$results.Add($out[$out.Count - 1])
        } catch {
            $exception = Get-InnermostException $_.Exception
            if ($exception.Data.Contains('AgentCode')) {
                $code = [string]$exception.Data['AgentCode']
                $hresult = $null
                if ($exception.Data.Contains('AgentHResult')) { $hresult = $exception.Data['AgentHResult'] }
            } else {
                $hresult = ConvertTo-HResult32 $exception.HResult
                $code = Get-CodeForHResult $hresult
            }
            return (New-ErrorResponse $name $index $code $exception.Message $hresult $results)
        }
    }
    return [ordered]@{ ok = $true; results = $results }
}

try {
    $response = Invoke-Request $RequestJson
} catch {
    $exception = Get-InnermostException $_.Exception
    $response = New-ErrorResponse $null $null 'Fault' $exception.Message $exception.HResult (New-List)
}
Write-AgentOutput $response
