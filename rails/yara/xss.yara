/*
 * Output rail "injection detection" (`injections: [xss, ...]`): markup that would run script or
 * leak data when an answer is rendered as HTML or Markdown. Replaces NeMo's shipped xss.yara,
 * which blocks every answer mentioning "href" before "javascript" and every Markdown image.
 */

rule markdown_xss
{
    meta:
        description = "Script tags, event handlers, javascript: URLs, remote Markdown images (exfiltration)"
    strings:
        $script = /<\s*script\b/ nocase
        $handler = /<[a-z][^>\n]{0,200}\son[a-z]+\s*=/ nocase
        $frame = /<\s*(iframe|object|embed|frameset)\b/ nocase
        $js_url = /(href|src|action|formaction|xlink:href)\s*=\s*["']?\s*(javascript|vbscript|data):/ nocase
        $md_js = /\]\(\s*(javascript|vbscript|data):/ nocase
        $md_remote_image = /!\[[^\]\n]{0,200}\]\(\s*(https?:)?\/\/[^)\s]+/ nocase
    condition:
        any of them
}
