/*
 * Output rail "injection detection" (NeMo's built-in rail, `injections: [code, ...]`): code that
 * would run shells or open network connections if an answer were executed.
 * Replaces NeMo's shipped code.yara, whose rule fires on any text with "import" before "os"
 * (e.g. "it is important to note that most ...").
 */

rule import_shells
{
    meta:
        description = "Python code importing or calling shell and process modules, or shell one-liners"
    strings:
        $py_import = /(^|\n)[ \t]*(from[ \t]+(os|subprocess|shutil|pty|commands)(\.\w+)?[ \t]+import\b|import[ \t]+(os|subprocess|shutil|pty|commands)\b)/
        $py_call = /\b(os\.(system|popen|exec[lv]p?e?|spawn[lv]p?e?)|subprocess\.(run|call|check_call|check_output|Popen)|__import__)\s*\(/
        $sh_pipe = /\b(curl|wget)\s[^\n|]{1,200}\|\s*(sudo\s+)?(ba|z)?sh\b/
        $sh_rm = /\brm\s+-(rf|fr)\s+(\/|~|\*)/
        $sh_reverse = /\b(nc|ncat|netcat)\s+(-\w+\s+)*-e\s|\bbash\s+-i\s+>&\s*\/dev\/tcp\//
    condition:
        any of them
}

rule import_networking
{
    meta:
        description = "Python code importing networking modules"
    strings:
        $py_import = /(^|\n)[ \t]*(from[ \t]+(socket|asyncio|http|bs4|requests|mechanize|urllib|urllib3|asyncssh|paramiko)(\.\w+)?[ \t]+import\b|import[ \t]+(socket|http|requests|mechanize|urllib|urllib3|asyncssh|paramiko)\b)/
    condition:
        any of them
}
