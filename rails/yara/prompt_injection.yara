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
        $forget_all = /\b(forget|ignore|disregard)\s+(about\s+)?(all|everything)\s+(of\s+)?(the\s+|your\s+|you\s+)?(previous|prior|above|instructions|assignments|tasks|information|documents|rules|know|were\s+told|said|before)\b/ nocase
        $new_task = /\b(now|jetzt|nun)\b[^.\n]{0,40}\b(new|neue|neuen)\s+(task|assignment|instructions|aufgabe|anweisungen)\b/ nocase
        $fr = /\b(oubliez|ignorez|oublie|ignore)\s+(toutes\s+|tout\s+)?(les\s+|tes\s+|vos\s+)?(instructions|consignes)\b/ nocase
        $dont_answer = /\b(do\s+not|don't)\s+answer\s+(this|the)\s+question\s+(but|and)\b/ nocase
    condition:
        any of them
}

rule disregard_rules
{
    meta:
        description = "Asks the model to set aside its rules, policies or safety training"
    strings:
        $drop = /\b(ignore|disregard|forget|bypass|abandon)\s+(all\s+)?(your|the|its|any)\s+(rules|guidelines|policies|restrictions|safety\s+(rules|guidelines|filters)|content\s+polic(y|ies)|programming|training|ethical\s+guidelines)\b/ nocase
        // "break the rules" is ordinary prose (the Zen of Python says it); breaking *your* rules is not.
        $break = /\bbreak\s+(all\s+)?(your|its|any\s+of\s+your)\s+(rules|guidelines|policies|restrictions|programming|training)\b/ nocase
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

rule jailbreak_template
{
    meta:
        description = "Two or more hallmarks of the persona jailbreak templates (stay in character, no ethics, never refuse, ...)"
    strings:
        $stay = /\b(stay|remain|keep|staying)\s+in\s+(your\s+)?character\b/ nocase
        $break = /\bbreak(s|ing)?\s+character\b/ nocase
        $no_ethics = /\b(no|without(\s+any)?|free\s+(of|from)|devoid\s+of|lacks?|(doesn't|does\s+not|don't|do\s+not)\s+have(\s+any)?)\s+(moral|ethical|ethics|morals|morality|filters?|filtering|censorship|restrictions?|limitations?|limits|boundaries|guidelines|principles)\b/ nocase
        $never_refuse = /\b(never|not|won't|will\s+not|cannot|can't|must\s+not|mustn't)\s+(ever\s+)?(refuse|decline|deny)s?\b/ nocase
        $policy = /\b(openai|chatgpt|anthropic)('s|s)?\s+(content\s+|usage\s+)?(polic(y|ies)|guidelines|rules|restrictions|filters?|limitations)\b/ nocase
        $ai_model = /\bas\s+an\s+ai\s+language\s+model\b/ nocase
        $anything = /\b(can|will|could)\s+(say|do|write|generate)\s+anything\b/ nocase
        $no_matter = /\bno\s+matter\s+how\s+(unethical|immoral|illegal|dangerous|harmful|offensive|inappropriate)\b/ nocase
        $regardless = /\bregardless\s+of\s+(how\s+)?(legal|ethical|moral|illegal|unethical|dangerous|harmful|inappropriate)\b/ nocase
        $unfiltered = /\b(unfiltered|uncensored|amoral)\b/ nocase
        $fiction = /\b(hypothetical|fictional)\s+(story|scenario|world|setting|response)\b/ nocase
        $placeholder = /\[\s*insert\s+prompt\s+here\s*\]/ nocase
    condition:
        2 of them
}

rule jailbreak_family
{
    meta:
        description = "Signature sentences of named jailbreak prompts (AIM, STAN, the ethics-exception role-play, dual answers)"
    strings:
        $aim = /\balways\s+intelligent\s+and\s+machiavellian\b/ nocase
        $stan = /\bstrive\s+to\s+avoid\s+norms\b/ nocase
        $exception = /\bexception\s+to\s+(the\s+)?(ai|openai|chatgpt)?('s|s)?\s*usual\s+ethical\s+protocols\b/ nocase
        $dual = /\[(\xf0\x9f\x94\x93\s*)?jailbreak\]|\((\xf0\x9f\x94\x93\s*)?developer\s+mode\s+output\)/ nocase
    condition:
        any of them
}

rule harmful_howto
{
    meta:
        description = "Asks for instructions to make weapons or explosives, or to write phishing or malware"
    strings:
        $weapon = /\b(how\s+(to|do\s+i|can\s+i|would\s+i)|instructions\s+(for|on)|tutorial\s+on|steps\s+(to|for)|guide\s+(to|on))\s+(make|build|making|building|assemble|assembling|create|creating|construct)\s+(a\s+|an\s+)?(homemade\s+|pipe\s+)?(bomb|bombs|explosive|explosives|grenade|molotov\s+cocktail|nerve\s+agent|bioweapon|chemical\s+weapon|ghost\s+gun)\b/ nocase
        $phishing = /\b(write|draft|create|compose|design|generate)\s+(me\s+)?(a|an)\s+([a-z]+\s+){0,2}(phishing\s+(email|message|page|site|website|text)|ransomware|keylogger|computer\s+virus)\b/ nocase
    condition:
        any of them
}
