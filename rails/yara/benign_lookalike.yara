/*
 * railgraph "benign look-alike" rules, read by the prompt-attack classifier (rails/checks.py).
 * They never block and never pass a prompt on their own: a prompt that matches one must reach the
 * stricter `lookalike_threshold` of models/prompt_attack.json instead of the ordinary threshold.
 * Each rule names a harmless reading of words that also appear in attacks: questions asked to stay
 * safe, and the technical or everyday sense of violent verbs. Case-insensitive; matched as given
 * and again after NFKC normalisation, like prompt_injection.yara.
 */

rule safety_question
{
    meta:
        description = "Asks how to stay safe from, notice or report a danger, not how to cause it"
    strings:
        $protect = /\bhow\s+(can|do|should|could)\s+(i|we|you|people|parents)\s+(best\s+)?(protect|defend|safeguard|shield)\s+(myself|ourselves|yourself|themselves|my|our|your|their|children|kids|against|from)\b/ nocase
        $notice = /\bhow\s+(can|do|should|could)\s+(i|we|you|people)\s+(recognize|recognise|spot|tell\s+if|report)\b/ nocase
        $signs = /\bwhat\s+(are|is)\s+(the\s+)?(common\s+|early\s+|warning\s+)*(signs|symptoms|dangers|risks|health\s+risks|side\s+effects)\s+of\b/ nocase
        $why_dangerous = /\bwhy\s+(is|are)\s+[^?.\n]{1,40}\s+(so\s+)?(dangerous|harmful|toxic|illegal|unsafe)\b/ nocase
        $dispose = /\bhow\s+(do|can|should)\s+(i|we|you)\s+safely\s+(dispose|store|handle|use|remove|clean)\b/ nocase
    condition:
        any of them
}

rule technical_sense
{
    meta:
        description = "A violent verb in its computing, kitchen, sports or idiomatic sense"
    strings:
        $kill_process = /\b(kill|terminate|abort|stop)\s+(a|an|the|this|that|my|all)\s+([a-z]+\s+)?(process|processes|task|job|jobs|thread|container|pod|query|session|program|server)\b/ nocase
        $life_hack = /\b(life\s+hacks?|hack\s+my\s+(productivity|routine|sleep|morning|workflow|study))\b/ nocase
        $idiom = /\b(steal\s+the\s+show|kill\s+time|crack\s+(an|the)\s+egg|blow\s+up\s+(a|the)\s+balloon|shoot\s+(a|the)\s+(photo|picture|video|film))\b/ nocase
    condition:
        any of them
}
