/*
 * railgraph input rail "yara prompt injection": exact phrases of well-known prompt-injection and
 * jailbreak families. Every string is case-insensitive; the rail matches the prompt as given and
 * again after Unicode NFKC normalisation with zero-width characters removed.
 * Keep each rule to one family: the rule name becomes the verdict's detail.
 */

rule ignore_previous_instructions
{
    meta:
        description = "Asks the model to drop the instructions it was given"
    strings:
        $en = /\b(ignore|disregard|forget|skip|override|bypass|neglect)\s+(all\s+|any\s+|the\s+|your\s+|my\s+|of\s+)*(previous|prior|preceding|above|earlier|former|initial|original|existing|system|developer)\s+(instructions?|prompts?|rules|directions?|directives?|guidelines|commands?|context|messages?|orders)\b/ nocase
        $en_everything = /\b(ignore|disregard|forget)\s+(everything|all)\s+(above|before|you\s+(were|have\s+been)\s+told)\b/ nocase
        $de = /\b(ignoriere|ignorieren\s+sie|vergiss|vergessen\s+sie)\s+(alle\s+|die\s+|deine\s+)*(vorherigen|bisherigen|vorangehenden|obigen|vorigen|vorhergehenden)\s+(anweisungen|befehle|instruktionen|regeln|aufgaben)\b/ nocase
        $de_alles = /\b(vergiss|vergessen\s+sie)\s+alles(\s+was)?\s+(bisher|davor|vorher|zuvor)\b/ nocase
    condition:
        any of them
}

rule disregard_rules
{
    meta:
        description = "Asks the model to set aside its rules, policies or safety training"
    strings:
        $drop = /\b(ignore|disregard|forget|bypass|break|abandon)\s+(all\s+)?(your|the|its|any)\s+(rules|guidelines|policies|restrictions|safety\s+(rules|guidelines|filters)|content\s+polic(y|ies)|programming|training|ethical\s+guidelines)\b/ nocase
        $no_rules = /\b(you\s+(have|has)\s+no|free\s+(of|from)\s+(all|any))\s+(rules|restrictions|filters|limitations|guidelines)\b/ nocase
    condition:
        any of them
}

rule dan_persona
{
    meta:
        description = "DAN-style jailbreak personas that claim to do anything without limits"
    strings:
        $dan = /\b(you\s+are|you're|act\s+as|pretend\s+to\s+be|become)\s+(now\s+)?(a\s+)?DAN\b/ nocase
        $do_anything = /\bdo\s+anything\s+now\b/ nocase
        $unrestricted = /\b(you\s+are|you're)\s+now\s+(an?\s+)?(unrestricted|unfiltered|uncensored|jailbroken|unlimited)\b/ nocase
        $jailbreak = /\b(jailbreak|jailbroken)\s+mode\b/ nocase
    condition:
        any of them
}

rule reveal_system_prompt
{
    meta:
        description = "Asks for the hidden system prompt or initial instructions"
    strings:
        $reveal = /\b(reveal|show|print|repeat|display|output|leak|disclose|tell\s+me|give\s+me|write\s+out|recite)\s+(me\s+)?(your|the)\s+(full\s+|entire\s+|exact\s+)?(system|initial|original|hidden|secret|internal)\s+(prompt|instructions|message|rules)\b/ nocase
        $what = /\bwhat\s+(is|are|was|were)\s+your\s+(system\s+prompt|initial\s+instructions|original\s+instructions|hidden\s+instructions)\b/ nocase
    condition:
        any of them
}

rule developer_mode
{
    meta:
        description = "Claims a special unrestricted mode (ChatGPT developer mode and its kin)"
    strings:
        $enabled = /\b(dev|developer|sudo|admin|god)\s+mode\s+(is\s+)?(enabled|activated|output|response)\b/ nocase
        $with = /\b(with|in)\s+(the\s+)?developer\s+mode\b/ nocase
        $persona = /\b(you\s+are|you're|act\s+as|simulate|pretend|emulate)\b[^.\n]{0,60}\bdeveloper\s+mode\b/ nocase
        $your = /\b(enable|activate|enter|switch\s+to|turn\s+on)\s+your\s+(dev|developer|god|sudo|admin|debug|jailbreak)\s+mode\b/ nocase
    condition:
        any of them
}
