/*
 * Output rail "injection detection" (`injections: [sqli, ...]`): SQL injection payloads.
 * Replaces NeMo's shipped sqli.yara, whose rule fires on any SQL keyword as a substring
 * ("added", "created", "address") next to a semicolon, a double dash or an apostrophe, i.e. on
 * most English prose.
 */

rule sql_injection
{
    meta:
        description = "SQL injection payloads: tautologies, UNION SELECT, stacked queries, time delays"
    strings:
        $union = /\bunion(\s+all)?\s+select\b/ nocase
        $tautology = /'\s*\)?\s*(or|and)\s+'?\w+'?\s*=\s*'?\w+/ nocase
        $stacked = /;\s*(drop|delete|truncate|alter|insert|update|exec|execute|shutdown|create)\s+(table|from|into|database|schema|user|procedure|\w+\s+set)\b/ nocase
        $comment_out = /'\s*\)?\s*(--|#|\/\*)/
        $delay = /\b(sleep|pg_sleep|benchmark)\s*\(\s*\d|\bwaitfor\s+delay\s+'/ nocase
        $catalog = /\b(from|join)\s+(information_schema|pg_catalog|sys\.objects|sysobjects|sqlite_master)\b/ nocase
        $char = /(\bcha?r\(\d+\)\s*([,+]|\|\|)\s*){2,}/ nocase
    condition:
        any of them
}
