"""Pasted material in a message: the text a request is about, apart from the request itself.

Apps and people paste what a question is about under a label ("Context:", "Passage:", "Document 2:",
"Kontext:", ``<context>...</context>``) and ask about it around the label ("Question: ..."). The
material's words say what the text is about (a statute, a trial, an API), not what is asked of it, so
the classifier reads them apart: their cues count ``window.body_weight``, and the model reads only the
request around them. A label is a short line ending in ``:`` whose last word names a kind of material;
the material runs from it to the next request label ("Question:", "Frage:") or the end of the text.

Only explicit labels and tags count: a passage pasted without one stays part of the request, and code
is never material (a fenced snippet is usually what the request is about). A field such as
"Email: ann@example.com" is not a block: after a label, the rest of its line must be empty or long,
unless the label is numbered ("Document 2: Pricing", a title).
"""

from __future__ import annotations

import re

from ahocorasick_rs import MATCHKIND_LEFTMOST_LONGEST, BytesAhoCorasick, Implementation

#: Nouns that name pasted material, in English, German, French, Spanish, Italian, Portuguese, Dutch and
#: Polish. A label may put up to two words before one ("News report:", "Retrieved snippets:").
MATERIAL_NOUNS = frozenset({
    "context", "passage", "passages", "text", "texts", "article", "articles", "document", "documents", "doc",
    "docs", "reference", "references", "background", "abstract", "excerpt", "excerpts", "source", "sources",
    "snippet", "snippets", "transcript", "email", "e-mail", "report", "notes", "memo", "letter", "review",
    "reviews", "post", "thread", "page", "section", "paragraph", "story", "input", "material", "content",
    "documentation", "terms", "guideline", "guidelines",
    "kontext", "artikel", "dokument", "dokumente", "auszug", "quelle", "quellen", "hintergrund", "bericht",
    "abschnitt", "nachricht",
    "contexte", "texte", "extrait", "rapport", "courriel",
    "contexto", "texto", "artículo", "articulo", "documento", "documentos", "pasaje", "fragmento", "fuente",
    "fuentes", "extracto", "informe", "correo",
    "contesto", "testo", "articolo", "passaggio", "brano", "estratto", "fonte", "fonti",
    "artigo", "passagem", "trecho", "relatório", "relatorio",
    "tekst", "bron", "kontekst", "artykuł", "artykul",
})
#: Labels that start the request again after material: the question ("Question:", "Antwort:", Alpaca's
#: "Response:"), or the facts it is asked about ("Facts:", "Sachverhalt:").
REQUEST_NOUNS = frozenset({
    "question", "questions", "q", "query", "task", "instruction", "instructions", "answer", "a",
    "response", "output", "prompt",
    "facts", "scenario", "situation", "case", "problem",
    "frage", "fragen", "aufgabe", "antwort", "anweisung", "sachverhalt", "fall",
    "réponse", "reponse", "tâche", "tache", "consigne", "faits", "cas",
    "pregunta", "preguntas", "tarea", "respuesta", "instrucción", "instruccion", "hechos", "caso",
    "domanda", "domande", "compito", "risposta", "istruzione", "fatti", "fattispecie",
    "pergunta", "perguntas", "tarefa", "resposta", "instrução", "instrucao", "factos", "fatos",
    "vraag", "opdracht", "antwoord", "feiten", "casus", "pytanie", "odpowiedź", "odpowiedz", "zadanie",
})
#: Material shorter than this is read as part of the request.
MIN_MATERIAL_CHARS = 200
#: A label line that also holds text is a block only with at least this much after the label.
MIN_INLINE_CHARS = 60
#: A block without a label after it ends before its last paragraph if that is at most this long.
_MAX_LAST_PARAGRAPH = 500
#: The longest label read, in characters, and its most words.
_MAX_LABEL_CHARS = 40
_MAX_LABEL_WORDS = 3
_LABEL_TRIM = " \t#*>-_[]()."


def split_material(text: str, low: str | None = None) -> tuple[str, str] | None:
    """The request and the material of a text (each part joined by newlines), or ``None`` when it holds no
    labelled material or nothing but material. ``low`` is ``text.lower()`` if the caller has it."""
    if len(text) < MIN_MATERIAL_CHARS:
        return None
    if low is None or len(low) != len(text):
        low = _lower(text)
    spans = _labelled(text, low)
    if "<" in low and "</" in low:  # one character is found many times faster than two
        spans += _tagged(low)
    if not spans:
        return None
    spans.sort()
    request: list[str] = []
    material: list[str] = []
    end = 0
    for start, stop in spans:
        if stop <= end:  # inside the previous span (a tag in a labelled block)
            continue
        start = max(start, end)
        request.append(text[end:start])
        material.append(text[start:stop])
        end = stop
    request.append(text[end:])
    asked = "\n".join(part for part in request if part.strip())
    if len(asked.split()) < 2:
        return None
    return asked, "\n".join(material)


def _lower(text: str) -> str:
    """``text.lower()`` with the same offsets: the few characters that lower-case to two ("İ") stay."""
    low = text.lower()
    return low if len(low) == len(text) else "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _labelled(text: str, low: str) -> list[tuple[int, int]]:
    """Spans of the blocks under material labels, each up to the next request label or the text's end.
    Labels are looked for in the first ``_LABELS_HEAD`` and the last ``_LABELS_TAIL`` characters."""
    n = len(text)
    if n <= _LABELS_HEAD + _LABELS_TAIL:
        colons = _label_colons(low)
    else:
        tail = n - _LABELS_TAIL
        colons = _label_colons(low[:_LABELS_HEAD]) + [tail + c for c in _label_colons(low[tail:])]
    spans: list[tuple[int, int]] = []
    start = -1  # where the open block's material starts
    for colon in colons:
        line = low.rfind("\n", max(0, colon - _MAX_LABEL_CHARS - 1), colon) + 1
        if line == 0 and colon > _MAX_LABEL_CHARS:
            continue  # no line starts near enough before the colon
        label = low[line:colon]
        frame = label.rfind(":")
        if frame != -1 and len(label[:frame].strip(_LABEL_TRIM).split()) <= 2:
            label = label[frame + 1 :]  # a template's label before the material's: "Q: Context:"
        kind = _label_kind(label)
        if kind == "request" and start >= 0:
            if line - start >= MIN_MATERIAL_CHARS:
                spans.append((start, line))
            start = -1
        elif kind == "material" and line > start:
            newline = text.find("\n", colon)
            rest = text[colon + 1 : newline if newline != -1 else n].strip()
            if rest and len(rest) < MIN_INLINE_CHARS and not label.rstrip(_LABEL_TRIM)[-1:].isdigit():
                continue  # a field ("Email: ann@example.com"), not a block; "Document 2: Pricing" is one
            if start >= 0 and line - start >= MIN_MATERIAL_CHARS:
                spans.append((start, line))
            start = colon + 1
    if start >= 0:
        # A block that runs to the end leaves out its last paragraph if it is short: the question
        # often follows the material without a label.
        last = text.rfind("\n\n", start)
        stop = last if last != -1 and n - last <= _MAX_LAST_PARAGRAPH and text[last:].strip() else n
        if stop - start >= MIN_MATERIAL_CHARS:
            spans.append((start, stop))
    return spans


def _label_colons(low: str) -> list[int]:
    """Where a colon follows a label noun in ``low`` ("context:", "frage :", "excerpt):"), at most
    ``_MAX_LABELS``: one pass of an automaton, so a text with many colons (code, JSON, a transcript) costs
    no Python per colon."""
    if ":" not in low:
        return []
    data = low.encode("utf-8", "surrogatepass")
    found = _FINDER.find_matches_as_indexes(data)
    if len(data) == len(low):
        return [end - 1 for _, _, end in found[:_MAX_LABELS]]
    return [len(data[:end].decode("utf-8", "surrogatepass")) - 1 for _, _, end in found[:_MAX_LABELS]]


def _label_kind(label: str) -> str | None:
    """"material" or "request" for a label's lower-cased text (before its colon), else ``None``. A label
    is up to three words of letters, the last one naming the kind, and maybe a number ("Document 2:")."""
    words = [w.strip("()[]") for w in label.strip(_LABEL_TRIM).split()]  # "Policy (excerpt):"
    if len(words) > 1 and words[-1].isdigit():
        words.pop()
    if not words or len(words) > _MAX_LABEL_WORDS or not all(w.replace("-", "").isalpha() for w in words):
        return None
    noun = words[-1]
    if noun in REQUEST_NOUNS and (len(words) == 1 or len(noun) > 1 and len(words) == 2):
        return "request"
    if noun in MATERIAL_NOUNS:
        return "material"
    return None


def _tagged(low: str) -> list[tuple[int, int]]:
    """Spans of the tags named by material nouns (``<context>``, ``<documents>``) in a lower-cased text. A
    closing tag is looked for up to ``_MAX_TAGGED`` characters on, once per tag name, and tags inside a
    block found are skipped: a text of many opening tags costs a few bounded searches."""
    spans: list[tuple[int, int]] = []
    tried: set[str] = set()
    for match in _OPEN_TAG.finditer(low, 0, _LABELS_HEAD):
        name = match.group(1)
        if (spans and match.start() < spans[-1][1]) or name in tried or name.rstrip("s") not in _TAG_NAMES:
            continue
        close = low.find(f"</{name}", match.end(), match.end() + _MAX_TAGGED)
        end = low.find(">", close, close + _MAX_TAG_CHARS) + 1 if close != -1 else 0
        if end <= 0:
            tried.add(name)  # not closed near enough: neither is the next one of that name
            continue
        if close - match.end() >= MIN_MATERIAL_CHARS:
            spans.append((match.start(), end))  # the tags too: their markup is no part of the request
    return spans


#: Labels and tags are looked for in this many characters at the head of a text, and labels also at its tail.
_LABELS_HEAD = 3000
_LABELS_TAIL = 1000
#: How far a closing tag is looked for after its opening tag, and the longest tag read.
_MAX_TAGGED = 65536
_MAX_TAG_CHARS = 160
#: The most labels read in each of the head and the tail.
_MAX_LABELS = 64
#: A label noun and what may follow it up to the colon: "Context:", "Kontext :", "Policy (excerpt):",
#: "**Text**:", "Document 2:".
_FINDER = BytesAhoCorasick(
    [f"{noun}{end}:".encode() for noun in sorted(MATERIAL_NOUNS | REQUEST_NOUNS)
     for end in ("", " ", ")", "**", ")**", *(f" {d}" for d in range(1, 10)))],
    matchkind=MATCHKIND_LEFTMOST_LONGEST,
    implementation=Implementation.DFA,
)
_OPEN_TAG = re.compile(r"<([a-z][a-z_-]{0,24})(?:\s[^<>]{0,120})?>")
#: Tag names that hold material, less a trailing "s".
_TAG_NAMES = frozenset(n.rstrip("s") for n in MATERIAL_NOUNS if n.isascii() and n.isalpha())
