/*
 * Output rail "injection detection" (`injections: [template, ...]`): server-side template and
 * expression-language injection. Like NeMo's shipped rule, but the markers must close on the
 * same line, and log4j-style lookups are caught too.
 */

rule jinja_injection
{
    meta:
        description = "Jinja/Twig/Handlebars expressions or statements, ${...} lookups"
    strings:
        $expression = /\{\{[^\n]{0,300}\}\}/
        $statement = /\{%[^\n]{0,300}%\}/
        $lookup = /\$\{(jndi|env|sys|java|lower|upper|script):/ nocase
    condition:
        any of them
}
