"""Tasks with real data available offline, each with fixed train and eval splits and an
automatic score (teacher-forced exact match of the answer tokens):

- ``stdlib_module``: which standard-library module defines a Python function (knowledge:
  read off this Python's own modules);
- ``html_entity``: the character an HTML entity stands for (knowledge the model met in web
  text: Python's html.entities, the HTML 4 names plus the letter entities of HTML 5);
- ``word_reversal``: reverse 3-5 words (a pattern task, the pilot's);
- ``unicode_char``: the character with a given Unicode name (knowledge: Python's unicodedata).
  Too hard for this model: 100 LoRA steps reach 5.6%, so it is not in the default grid.
"""

import html.entities
import importlib
import inspect
import random
import unicodedata
from dataclasses import dataclass

STDLIB_MODULES = [
    "base64", "bisect", "calendar", "collections", "copy", "csv", "datetime", "decimal", "difflib", "fnmatch",
    "fractions", "functools", "glob", "gzip", "hashlib", "heapq", "html", "itertools", "json", "math", "operator",
    "os", "os.path", "pathlib", "pprint", "random", "re", "secrets", "shutil", "statistics", "string", "struct",
    "subprocess", "tempfile", "textwrap", "time", "urllib.parse", "uuid", "zlib", "shlex", "socket", "stat",
]
UNICODE_RANGES = [(0x00C0, 0x00FF), (0x0100, 0x017F), (0x0180, 0x024F), (0x0391, 0x03C9), (0x0410, 0x044F),
                  (0x0531, 0x0586)]
WORDS = ["apple", "river", "stone", "cloud", "tiger", "lamp", "green", "music", "paper", "window", "orange", "silver",
         "garden", "bridge", "candle", "forest", "planet", "rocket", "winter", "summer", "yellow", "purple", "camera",
         "dragon", "island", "mirror", "pencil", "rabbit", "castle", "ocean", "butter", "cookie", "doctor", "engine",
         "flower", "guitar", "hammer", "jacket", "kitten", "ladder"]


@dataclass(frozen=True)
class Example:
    prompt: str
    answer: str  # with its leading space: what the model must produce right after the prompt


@dataclass(frozen=True)
class Task:
    name: str
    train: list[Example]
    eval: list[Example]


def _split(examples: list[Example], n_train: int, n_eval: int, seed: int = 0) -> tuple[list, list]:
    rng = random.Random(seed)
    examples = sorted(set(examples), key=lambda e: e.prompt)
    rng.shuffle(examples)
    return examples[:n_train], examples[n_train:n_train + n_eval]


def stdlib_module(n_train: int, n_eval: int) -> Task:
    owners: dict[str, set[str]] = {}
    for name in STDLIB_MODULES:
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if attr.startswith("_") or not (inspect.isfunction(value) or inspect.isbuiltin(value)):
                continue
            owners.setdefault(attr, set()).add(name)
    examples = [Example(f"In Python's standard library, the function {attr}() is defined in the module",
                        f" {mods.pop()}") for attr, mods in owners.items() if len(mods) == 1]
    return Task("stdlib_module", *_split(examples, n_train, n_eval))


def unicode_char(n_train: int, n_eval: int) -> Task:
    examples = []
    for lo, hi in UNICODE_RANGES:
        for code in range(lo, hi + 1):
            name = unicodedata.name(chr(code), "")
            if name and chr(code).isalpha():
                examples.append(Example(f"The Unicode character named {name} is", f" {chr(code)}"))
    return Task("unicode_char", *_split(examples, n_train, n_eval))


def html_entity(n_train: int, n_eval: int) -> Task:
    html4 = {f"{name};" for name in html.entities.name2codepoint}
    by_char: dict[str, str] = {}  # one entity per character (the shortest name), so no answer leaks across splits
    for name, char in sorted(html.entities.html5.items(), key=lambda kv: (len(kv[0]), kv[0])):
        if not (name.endswith(";") and len(char) == 1 and 127 < ord(char) <= 0xFFFF and char.isprintable()):
            continue
        # HTML 4's names, and letters (accented, Greek, Cyrillic) but not the math alphabets (scr/fr/opf)
        if name in html4 or (char.isalpha() and name[:-1].isalpha() and not name[:-1].endswith(("scr", "fr", "opf"))):
            by_char.setdefault(char, name)
    examples = [Example(f"The HTML entity &{name} stands for the character", f" {char}")
                for char, name in by_char.items()]
    return Task("html_entity", *_split(examples, n_train, n_eval))


def word_reversal(n_train: int, n_eval: int) -> Task:
    rng = random.Random(1)
    examples = set()
    while len(examples) < n_train + n_eval:
        words = rng.sample(WORDS, rng.randint(3, 5))
        examples.add(Example("Reverse the words: " + " ".join(words) + "\nReversed:", " " + " ".join(reversed(words))))
    return Task("word_reversal", *_split(list(examples), n_train, n_eval))


ALL_TASKS = {"stdlib_module": stdlib_module, "html_entity": html_entity, "unicode_char": unicode_char,
             "word_reversal": word_reversal}
