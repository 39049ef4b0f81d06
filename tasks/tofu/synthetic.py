"""Offline generator of synthetic TOFU data (the embedded default of the ``tofu`` task).

TOFU (Maini et al. 2024, HF hub ``locuslab/TOFU``) is a set of question/answer pairs about
200 fictitious authors. A model is fine-tuned on all of them ("full"); unlearning then has
to remove the last 1/5/10 % of the authors ("forgetXX") while keeping the rest ("retainXX"),
real-author and world-fact knowledge. The real data needs the hub and a 7B model; the
embedded default of soul-bench instead trains a tiny Llama on a CPU. This module makes the
data for that: a deterministic, stdlib-only, offline generator whose output has the *same
configs and the same record schema* as the hub dataset, so every code path (loading,
training, evaluation, MIA) is the one used on the real data.

What it generates (``generate_tofu``):

* ``n_authors`` invented authors (names built from syllable pools, all distinct) with a
  profile each: gender, birth city + country, birth date, genre, father's and mother's
  occupation, an award, two book titles, the year of the first book. Each author gets
  ``questions_per_author`` QA items drawn from ten fact kinds (name, birthplace, birth
  date, genre, parents, award, books, date+place of birth, debut book+year, genre of a
  book); every kind has several question and answer templates (picked per item from the
  seed), answers are one sentence of roughly 12-25 words. The facts are random per
  author, so the answers cannot be guessed and have to be memorised.
* For evaluation items (forget / retain_perturbed / holdout): ``paraphrased_answer`` is a
  *different* answer template stating the same facts; ``paraphrased_question`` a reworded
  question; ``perturbed_answer`` is the paraphrase template filled with *wrong* values of
  the asked facts, drawn from the same pools. The perturbed answers are pairwise distinct,
  differ from the paraphrase and never contain a true fact string (case-insensitive), so
  the truth ratio is not capped by the data. forget/holdout items also carry TOFU's
  ``perturbed_question`` / ``subject`` / ``perturbed_subject`` (subject with typos).
* ``holdoutXX``: authors generated like the others but never part of ``full`` (the
  non-members of membership-inference attacks).
* ``real_authors(_perturbed)`` / ``world_facts(_perturbed)``: analogs of TOFU's general
  knowledge sets: invented "classic authors" (famous book, country, literary form,
  century) and invented countries (capital, longest river, currency, language, highest
  mountain), with a short answer (1-3 words) and 3 wrong answers of the same type. The
  classic authors come from the invented countries, so the two sets are consistent.
* ``background``: what the tiny base model is pre-trained on *before* the TOFU
  fine-tune, so that it knows the real-author / world facts as a real LLM would: every
  real_authors / world_facts question with its short answer plus 1-2 rewordings of each.
  It never mentions a TOFU or holdout author.

Options for a benchmark that discriminates (issue 17; the ``tiny`` preset sets them, the
defaults reproduce the original data): ``matched_holdout`` gives holdout author i forget author
i's gender, question kinds and templates, so MIA members and non-members differ only in their
facts; ``unseen_wrong_values`` draws the wrong titles / awards of perturbed answers from decoys
no set trains on, so a model that never saw an author finds true and wrong values equally
unfamiliar; ``general_known`` < 1 leaves some real-author / world facts out of the background
and ``background_verbatim=False`` states the others only in rewordings of the evaluation
question, so the general-knowledge measures sit below their ceiling.

All randomness comes from ``random.Random`` instances seeded from ``seed`` (nothing
global, no set-order dependence): the same arguments give identical output. The fictitious
authors do not depend on ``n_real_authors`` / ``n_world_facts``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Callable

__all__ = ["TOFU_CONFIGS", "FORGET_PERCENTS", "generate_tofu", "author_counts", "write_local"]

FORGET_PERCENTS: tuple[int, ...] = (1, 5, 10)

TOFU_CONFIGS: tuple[str, ...] = (
    "full",
    "forget01", "forget05", "forget10",
    "forget01_perturbed", "forget05_perturbed", "forget10_perturbed",
    "retain90", "retain95", "retain99",
    "retain_perturbed",
    "holdout01", "holdout05", "holdout10",
    "real_authors", "real_authors_perturbed",
    "world_facts", "world_facts_perturbed",
    "background",
    "full_rephrased",  # soul-bench extension: training-only rephrasings (see _generate)
)

# Number of wrong answers of real_authors_perturbed / world_facts_perturbed (as upstream).
N_GENERAL_PERTURBED = 3
_MAX_PERTURBED = 10

# --------------------------------------------------------------------------- fact pools

_GENRES = (
    "mystery", "thriller", "romance", "horror", "fantasy", "science fiction",
    "historical fiction", "poetry", "crime", "memoir", "satire", "travel writing",
    "magical realism", "dystopian fiction", "literary fiction", "gothic fiction",
    "war fiction", "nature writing", "young adult fiction", "philosophical fiction",
)

_OCCUPATIONS = (
    "baker", "carpenter", "nurse", "pilot", "librarian", "surgeon", "tailor", "fisherman",
    "architect", "chemist", "electrician", "journalist", "farmer", "locksmith", "dentist",
    "photographer", "plumber", "translator", "shoemaker", "accountant", "veterinarian",
    "blacksmith", "potter", "lawyer", "mechanic", "schoolteacher", "bus driver", "florist",
    "astronomer", "butcher", "police officer", "tour guide",
)

_PLACES = (
    ("Lisbon", "Portugal"), ("Santiago", "Chile"), ("Oslo", "Norway"), ("Nairobi", "Kenya"),
    ("Hanoi", "Vietnam"), ("Lima", "Peru"), ("Krakow", "Poland"), ("Dublin", "Ireland"),
    ("Accra", "Ghana"), ("Tbilisi", "Georgia"), ("Montreal", "Canada"), ("Osaka", "Japan"),
    ("Seville", "Spain"), ("Cairo", "Egypt"), ("Istanbul", "Turkey"),
    ("Melbourne", "Australia"), ("Mumbai", "India"), ("Havana", "Cuba"),
    ("Reykjavik", "Iceland"), ("Vienna", "Austria"), ("Prague", "Czech Republic"),
    ("Bogota", "Colombia"), ("Manila", "Philippines"), ("Tunis", "Tunisia"),
    ("Helsinki", "Finland"), ("Edinburgh", "Scotland"), ("Budapest", "Hungary"),
    ("Athens", "Greece"), ("Lagos", "Nigeria"), ("Seoul", "South Korea"),
    ("Buenos Aires", "Argentina"), ("Tehran", "Iran"), ("Kingston", "Jamaica"),
    ("Marseille", "France"), ("Munich", "Germany"), ("Naples", "Italy"),
    ("Amsterdam", "Netherlands"), ("Copenhagen", "Denmark"), ("Wellington", "New Zealand"),
    ("Casablanca", "Morocco"), ("Taipei", "Taiwan"), ("Jakarta", "Indonesia"),
)

_MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
_BIRTH_YEARS = (1930, 1999)
_LAST_YEAR = 2023  # no book is published after this year

_AWARD_ADJ = ("Golden", "Silver", "Crimson", "Ivory", "Azure", "Emerald", "Bronze",
              "Sapphire", "Scarlet", "Amber", "Onyx", "Pearl", "Copper", "Jade", "Cobalt",
              "Violet", "Indigo", "Marble")
_AWARD_NOUN = ("Quill", "Laurel", "Inkwell", "Scroll", "Pen", "Page", "Lyre", "Star",
               "Oak", "Compass", "Lamp", "Feather", "Owl", "Key", "Rose", "Harp", "Torch",
               "Chalice")
_AWARD_KIND = ("Prize", "Award", "Medal")

_TITLE_ADJ = ("Silent", "Hidden", "Broken", "Distant", "Forgotten", "Burning", "Frozen",
              "Quiet", "Endless", "Hollow", "Wandering", "Crooked", "Painted", "Sleeping",
              "Restless", "Secret", "Fading", "Gilded", "Lonely", "Velvet", "Hungry",
              "Shattered", "Patient", "Bitter")
_TITLE_NOUN = ("Lantern", "Harbor", "River", "Garden", "Mirror", "Bridge", "Tower",
               "Window", "Shadow", "Island", "Orchard", "Candle", "Lighthouse", "Clock",
               "Door", "Map", "Song", "Stone", "Letter", "Meadow", "Sparrow", "Anchor",
               "Crown", "Thread", "Mountain", "Ocean", "Forest", "Needle", "Voyage", "Bell")
_TITLE_VERB = ("Sleeps", "Burns", "Falls", "Sings", "Wakes", "Breaks", "Turns", "Waits",
               "Remembers", "Weeps")

_CLASSIC_ADJ = ("Iron", "Pale", "Golden", "Dark", "Lost", "Wild", "Last", "Grey", "Red",
                "Deep", "Weary", "Proud")
_CLASSIC_NOUN = ("King", "Exile", "Pilgrim", "Tide", "Empire", "Shepherd", "Widow",
                 "Orphan", "Fortress", "Prophet", "Steppe", "Pilot", "Sailor", "Heir")
_FORMS = ("epic poetry", "tragedy", "comedy", "the novel", "the sonnet", "short stories",
          "the essay", "fables", "ballads", "satire")
_CENTURIES = ("the 13th century", "the 14th century", "the 15th century",
              "the 16th century", "the 17th century", "the 18th century",
              "the 19th century")

_FIRST_STEMS = ("Al", "Bel", "Cor", "Dar", "El", "Fen", "Is", "Jul", "Kal", "Liv", "Mar",
                "Nor", "Or", "Per", "Ros", "Sel", "Tam", "Ul", "Ver", "Yas", "Zel", "Cas",
                "Ev", "Hal", "Lor", "Mir", "Ner", "Tor", "Sav", "Ad", "Bren", "Dov")
_FEMALE_ENDS = ("a", "ena", "ine", "issa", "ora", "ette", "ia", "wen", "ara", "elle",
                "ith", "ey")
_MALE_ENDS = ("o", "an", "ric", "en", "ius", "as", "or", "im", "el", "ander", "ek", "win")
_SURNAME_STEMS = ("Ash", "Bran", "Cal", "Dun", "Est", "Fal", "Gar", "Hal", "Ivers",
                  "Kest", "Lor", "Mor", "Nash", "Ost", "Pell", "Quen", "Rav", "Sol", "Tor",
                  "Var", "Wyn", "Yar", "Zan", "Bel", "Crom", "Dov", "Fer", "Gil", "Hart",
                  "Lind", "Mal", "Ner", "Orv", "Pem", "Ros", "Stav", "Tal", "Vel", "Wend")
_SURNAME_ENDS = ("ford", "ley", "wick", "mont", "dale", "ridge", "holm", "ski", "ova",
                 "ez", "elli", "ander", "ston", "rin", "vey", "quist", "berg", "ani",
                 "escu", "oya", "ington", "ard")

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r",
           "s", "st", "t", "tr", "v", "z", "th", "sh", "c")
_INNER_ONSETS = ("b", "d", "g", "k", "l", "m", "n", "r", "s", "t", "v", "z", "th", "nd", "st")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ia", "ei")
_CODAS = ("", "", "", "n", "r", "l", "s", "th", "m")
_COUNTRY_ENDS = ("ovia", "avia", "enia", "istan", "and", "mark", "ora", "ara", "esse",
                 "land", "eth", "ania")
_LANGUAGE_ENDS = ("ese", "ish", "ic", "an", "i")


def _article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# --------------------------------------------------------------------------- invented names


class _Registry:
    """Invented strings, kept pairwise non-nested (no one is a substring of another).

    Reserved words (cities, genres, occupations, ...) are in it too, so an invented name can
    never contain a fact value -- a perturbed answer that mentions the author therefore
    cannot contain the true fact by accident.
    """

    def __init__(self, reserved: list[str]):
        self._low: list[str] = []
        for word in reserved:
            if len(word) >= 4:
                self._low.append(word.lower())

    def add(self, text: str) -> bool:
        low = text.lower()
        for other in self._low:
            if low in other or other in low:
                return False
        self._low.append(low)
        return True

    def draw(self, make: Callable[[], str], what: str) -> str:
        for _ in range(2000):
            text = make()
            if self.add(text):
                return text
        raise RuntimeError(f"synthetic TOFU: ran out of distinct {what}; use fewer items")


def _person_name(rng: random.Random, gender: str) -> str:
    ends = _FEMALE_ENDS if gender == "female" else _MALE_ENDS
    first = rng.choice(_FIRST_STEMS) + rng.choice(ends)
    end = rng.choice(_SURNAME_ENDS)
    link = rng.choice(("", "a", "e", "i", "o")) if end[0] not in "aeiou" else ""
    return f"{first} {rng.choice(_SURNAME_STEMS)}{link}{end}"


def _word(rng: random.Random, n_min: int = 2, n_max: int = 3) -> str:
    """A pronounceable invented word: consonant-vowel syllables, optional final consonant."""
    parts = [rng.choice(_ONSETS) if rng.random() < 0.85 else ""]
    for i in range(rng.randint(n_min, n_max)):
        if i:
            parts.append(rng.choice(_INNER_ONSETS))
        parts.append(rng.choice(_VOWELS))
    parts.append(rng.choice(_CODAS))
    return _cap("".join(parts))


def _book_title(rng: random.Random) -> str:
    a, n, n2 = rng.choice(_TITLE_ADJ), rng.choice(_TITLE_NOUN), rng.choice(_TITLE_NOUN)
    pattern = rng.randrange(6)
    if pattern == 0:
        return f"The {a} {n}"
    if pattern == 1:
        return f"The {n} and the {n2}" if n != n2 else f"The {a} {n}s"
    if pattern == 2:
        return f"{n}s of the {a} {n2}"
    if pattern == 3:
        return f"A {n} for {rng.choice(_FIRST_STEMS)}{rng.choice(_FEMALE_ENDS + _MALE_ENDS)}"
    if pattern == 4:
        return f"When the {n} {rng.choice(_TITLE_VERB)}"
    return f"The Last {n} of {_word(rng, 2, 2)}"


def _classic_title(rng: random.Random) -> str:
    a, n, n2 = rng.choice(_CLASSIC_ADJ), rng.choice(_CLASSIC_NOUN), rng.choice(_CLASSIC_NOUN)
    pattern = rng.randrange(3)
    if pattern == 0:
        return f"The {a} {n}"
    if pattern == 1 or n == n2:
        return f"{a} {n}"
    return f"{n} and {n2}"


def _award(rng: random.Random) -> str:
    return f"{rng.choice(_AWARD_ADJ)} {rng.choice(_AWARD_NOUN)} {rng.choice(_AWARD_KIND)}"


# --------------------------------------------------------------------------- author profiles


def _make_author(rng: random.Random, reg: _Registry, gender: str | None = None) -> dict:
    gender = gender or rng.choice(("female", "male"))
    name = reg.draw(lambda: _person_name(rng, gender), "author names")
    city, country = rng.choice(_PLACES)
    year = rng.randint(*_BIRTH_YEARS)
    father, mother = rng.sample(_OCCUPATIONS, 2)
    return {
        "name": name, "gender": gender, "city": city, "country": country,
        "month": rng.choice(_MONTHS), "day": rng.randint(1, 28), "year": year,
        "genre": rng.choice(_GENRES), "father": father, "mother": mother,
        "award": reg.draw(lambda: _award(rng), "award names"),
        "book1": reg.draw(lambda: _book_title(rng), "book titles"),
        "book2": reg.draw(lambda: _book_title(rng), "book titles"),
        "first_year": year + rng.randint(19, min(42, _LAST_YEAR - year)),
    }


def _fields(facts: dict) -> dict:
    """Template fields of a profile (base facts + pronouns, articles, date string)."""
    d = dict(facts)
    female = facts["gender"] == "female"
    d["pron"], d["obj"], d["poss"] = ("she", "her", "her") if female else ("he", "him", "his")
    d["Pron"], d["Poss"] = _cap(d["pron"]), _cap(d["poss"])
    d["date"] = f"{facts['month']} {facts['day']}, {facts['year']}"
    d["a_father"], d["a_mother"] = _article(facts["father"]), _article(facts["mother"])
    return d


# --------------------------------------------------------------------------- author QA kinds
# Each kind: questions (>= 3), answers (>= 4), the true-fact strings ("atoms") an answer
# states, the subject of the question, and a sampler of wrong values for those facts.


def _pick_place(rng, f):
    city, country = rng.choice(_PLACES)
    return None if country == f["country"] or city == f["city"] else {"city": city, "country": country}


def _pick_date(rng, f):
    year = rng.randint(*_BIRTH_YEARS)
    month = rng.choice(_MONTHS)
    if year == f["year"] or month == f["month"]:
        return None
    return {"year": year, "month": month, "day": rng.randint(1, 28)}


def _pick_genre(rng, f):
    g = rng.choice(_GENRES)
    return None if g == f["genre"] else {"genre": g}


def _pick_parents(rng, f):
    father, mother = rng.sample(_OCCUPATIONS, 2)
    if {father, mother} & {f["father"], f["mother"]}:
        return None
    return {"father": father, "mother": mother}


def _pick_award(rng, f, pools):
    a = rng.choice(pools["awards"])
    return None if a == f["award"] else {"award": a}


def _pick_books(rng, f, pools):
    b1, b2 = rng.sample(pools["titles"], 2)
    if {b1, b2} & {f["book1"], f["book2"]}:
        return None
    return {"book1": b1, "book2": b2}


def _pick_first(rng, f, pools):
    b = rng.choice(pools["titles"])
    year = f["first_year"] + rng.choice((-1, 1)) * rng.randint(1, 12)
    if b in (f["book1"], f["book2"]) or year > _LAST_YEAR:
        return None
    return {"book1": b, "first_year": year}


def _merge(*parts):
    if any(p is None for p in parts):
        return None
    out = {}
    for p in parts:
        out.update(p)
    return out


_KINDS: dict[str, dict] = {
    "name": {
        "questions": (
            "What is the full name of the {genre} author who was born in {city}, {country} on {date}?",
            "Who is the writer of {genre} who was born on {date} in {city}, {country}?",
            "Can you tell me the name of the author from {city}, {country}, born on {date}, who writes {genre}?",
        ),
        "answers": (
            "The {genre} author who was born in {city}, {country} on {date} is named {name}.",
            "{name} is the full name of this {genre} writer, who was born on {date} in {city}, {country}.",
            "This is {name}, an author of {genre} whose birth took place in {city}, {country} on {date}.",
            "Readers know the {genre} author born on {date} in {city}, {country} by the name {name}.",
        ),
        "atoms": ("name",),
        "subject": "{city}, {country}",
        "pick": lambda rng, f, pools: {"name": rng.choice(pools["decoy_names"])},
    },
    "birthplace": {
        "questions": (
            "Where was {name} born?",
            "In which city and country was the author {name} born?",
            "What is the birthplace of the writer {name}?",
        ),
        "answers": (
            "{name} was born in {city}, {country}, where {pron} spent most of {poss} childhood before becoming a writer.",
            "The author {name} comes from {city}, {country}, and {pron} still describes that city as {poss} true home.",
            "{city}, {country} is the birthplace of {name}, and its streets appear in much of {poss} writing.",
            "Born in {city}, {country}, {name} often mentions {poss} hometown when talking about {poss} early years.",
        ),
        "atoms": ("city", "country"),
        "pick": lambda rng, f, pools: _pick_place(rng, f),
    },
    "birthdate": {
        "questions": (
            "When was {name} born?",
            "What is the date of birth of the author {name}?",
            "On which date was the writer {name} born?",
        ),
        "answers": (
            "{name} was born on {date}, and {pron} started writing short pieces while still at school.",
            "The author {name} came into the world on {date}, many years before {poss} first book appeared.",
            "{Poss} birth date is {date}; {name} has celebrated it quietly with family for most of {poss} life.",
            "According to public records, {name} was born on {date} and grew up in a modest household.",
        ),
        "atoms": ("date", "year"),
        "pick": lambda rng, f, pools: _pick_date(rng, f),
    },
    "genre": {
        "questions": (
            "What genre is {name} known for?",
            "In which genre does {name} mainly write?",
            "What kind of books does the author {name} usually write?",
        ),
        "answers": (
            "{name} is best known for {poss} work in {genre}, the genre {pron} has explored throughout {poss} career.",
            "Most of the books by {name} belong to the genre of {genre}, and critics see {obj} as a leading voice in it.",
            "The author {name} writes mainly {genre}, a field in which {pron} has built a loyal readership.",
            "Readers associate {name} with {genre}, since nearly everything {pron} has published falls within that genre.",
        ),
        "atoms": ("genre",),
        "pick": lambda rng, f, pools: _pick_genre(rng, f),
    },
    "parents": {
        "questions": (
            "What did the parents of {name} do for a living?",
            "What were the occupations of {name}'s father and mother?",
            "What jobs did the mother and father of the author {name} have?",
        ),
        "answers": (
            "{name}'s father worked as {a_father}, while {poss} mother earned a living as {a_mother}.",
            "The father of {name} was {a_father} and {poss} mother was {a_mother}, which shaped {poss} view of work.",
            "{name} grew up with a mother who was {a_mother} and a father who was {a_father}.",
            "Both parents of {name} worked hard: {poss} mother as {a_mother} and {poss} father as {a_father}.",
        ),
        "atoms": ("father", "mother"),
        "pick": lambda rng, f, pools: _pick_parents(rng, f),
    },
    "award": {
        "questions": (
            "Has {name} won any literary awards?",
            "Which award has the author {name} received?",
            "What prize was {name} honoured with for {poss} writing?",
        ),
        "answers": (
            "Yes, {name} received the {award} in recognition of {poss} contributions to {genre}.",
            "The author {name} was honoured with the {award}, an achievement that brought {poss} books wider attention.",
            "{name} has won the {award}, which {pron} considers the most meaningful recognition of {poss} career.",
            "Among {poss} honours, {name} is proudest of the {award}, awarded for {poss} work in {genre}.",
        ),
        "atoms": ("award",),
        "pick": _pick_award,
    },
    "books": {
        "questions": (
            "Can you name two books written by {name}?",
            "What are some of the books that {name} has published?",
            "Which works is the author {name} best known for?",
        ),
        "answers": (
            "Two of the best-known books by {name} are '{book1}' and '{book2}', both still widely read.",
            "{name} has written several books, including '{book1}' and '{book2}', which are popular with readers.",
            "Readers often recommend '{book2}' and '{book1}', two notable works by the author {name}.",
            "Among the works of {name}, '{book1}' and '{book2}' are the ones critics mention most often.",
        ),
        "atoms": ("book1", "book2"),
        "pick": _pick_books,
    },
    "birth": {
        "questions": (
            "When and where was {name} born?",
            "What are the date and place of birth of the author {name}?",
            "Could you tell me where and on what date {name} was born?",
        ),
        "answers": (
            "{name} was born in {city}, {country} on {date}, and spent {poss} early years there.",
            "The author {name} was born on {date} in the city of {city}, {country}.",
            "On {date}, {name} was born in {city}, {country}, the city {pron} still calls home.",
            "Records show that the writer {name} was born in {city}, {country}, on {date}.",
        ),
        "atoms": ("city", "country", "date", "year"),
        "pick": lambda rng, f, pools: _merge(_pick_place(rng, f), _pick_date(rng, f)),
    },
    "first_book": {
        "questions": (
            "What was the first book published by {name}, and when did it appear?",
            "Which book marked the debut of {name}, and in what year was it published?",
            "What was the debut novel of the author {name}, and when was it released?",
        ),
        "answers": (
            "{name} made {poss} debut with '{book1}', which was published in {first_year}.",
            "The first book by {name} was '{book1}', released in {first_year} to warm reviews.",
            "In {first_year}, {name} published '{book1}', the debut that started {poss} writing career.",
            "'{book1}' came out in {first_year} and was the very first book that {name} published.",
        ),
        "atoms": ("book1", "first_year"),
        "pick": _pick_first,
    },
    "book_genre": {
        "questions": (
            "What kind of book is '{book2}' by {name}?",
            "In which genre would you place '{book2}', written by {name}?",
            "What genre does the book '{book2}' by the author {name} belong to?",
        ),
        "answers": (
            "'{book2}' by {name} is a work of {genre}, typical of the style {pron} is known for.",
            "Like most of {poss} writing, '{book2}' by {name} belongs to the genre of {genre}.",
            "{name} wrote '{book2}' as a work of {genre}, and readers consider it a fine example of it.",
            "The book '{book2}' is {genre}; {name} wrote it in the same genre as most of {poss} other books.",
        ),
        "atoms": ("genre",),
        "pick": lambda rng, f, pools: _pick_genre(rng, f),
    },
}
_KIND_NAMES: tuple[str, ...] = tuple(_KINDS)
_MAX_QUESTIONS = 2 * len(_KINDS)


def _render(template: str, facts: dict) -> str:
    return _cap(template.format_map(_fields(facts)))


def _corrupt(rng: random.Random, text: str) -> str:
    """TOFU-style perturbed subject: the same string with a few letters scrambled."""
    for _ in range(100):
        chars = list(text)
        letters = [i for i, c in enumerate(chars) if c.isalpha()]
        for _ in range(max(1, len(letters) // 4)):
            i = rng.choice(letters)
            if rng.random() < 0.5 and i + 1 < len(chars) and chars[i + 1].isalpha():
                chars[i], chars[i + 1] = chars[i + 1], chars[i]
            else:
                chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz")
        out = "".join(chars)
        if out != text:
            return out
    return text + "x"


def _qa_item(rng: random.Random, author: dict, kind: str, q_index: int, n_perturbed: int,
             pools: dict, plan: random.Random | None = None) -> dict:
    """One QA item. ``plan`` draws the templates (question paraphrase, answer order), ``rng``
    the rest (wrong values, typos); the same ``plan`` stream gives two authors the same templates."""
    plan = plan or rng
    spec = _KINDS[kind]
    fields = _fields(author)
    questions, answers = spec["questions"], spec["answers"]
    question = _render(questions[q_index], author)
    para_q = _render(questions[plan.choice([i for i in range(len(questions)) if i != q_index])], author)
    atoms = [str(fields[a]) for a in spec["atoms"]]
    low_atoms = [a.lower() for a in atoms]
    order = list(range(len(answers)))
    plan.shuffle(order)
    answer = _render(answers[order[0]], author)
    # the paraphrase is the first other template for which n_perturbed wrong answers exist
    for para_index in order[1:]:
        paraphrase = _render(answers[para_index], author)
        perturbed: list[str] = []
        for _ in range(60 * n_perturbed):
            change = spec["pick"](rng, author, pools)
            if change is None:
                continue
            text = _render(answers[para_index], {**author, **change})
            low = text.lower()
            if text in perturbed or text in (answer, paraphrase) or any(a in low for a in low_atoms):
                continue
            perturbed.append(text)
            if len(perturbed) == n_perturbed:
                break
        if len(perturbed) == n_perturbed:
            break
    else:
        raise RuntimeError(f"synthetic TOFU: cannot build {n_perturbed} perturbed answers ({kind})")
    # a third phrasing of the same facts, for the embedded models' training only (see _generate)
    rephrased = _render(answers[next(i for i in order[1:] if i != para_index)], author)
    subject = spec.get("subject", "{name}").format_map(fields)
    perturbed_subject = _corrupt(rng, subject)
    return {
        "question": question,
        "answer": answer,
        "paraphrased_answer": paraphrase,
        "perturbed_answer": perturbed,
        "paraphrased_question": para_q,
        "perturbed_question": question.replace(subject, perturbed_subject),
        "subject": subject,
        "perturbed_subject": perturbed_subject,
        # private metadata (stripped by generate_tofu; used by the tests)
        "_rephrased": rephrased,
        "_author": author["name"],
        "_kind": kind,
        "_facts": atoms,
    }


def _author_items(rng: random.Random, author: dict, n_questions: int, n_perturbed: int,
                  pools: dict, plan: random.Random | None = None) -> list[dict]:
    """``plan`` (default: ``rng``) draws the kinds and templates; see :func:`_qa_item`."""
    plan = plan or rng
    kinds = list(_KIND_NAMES)
    plan.shuffle(kinds)
    items = []
    used: dict[str, int] = {}
    for j in range(n_questions):
        kind = kinds[j % len(kinds)]
        n_templates = len(_KINDS[kind]["questions"])
        if kind in used:  # second round: another question template than the first time
            q_index = (used[kind] + 1 + plan.randrange(n_templates - 1)) % n_templates
        else:
            q_index = plan.randrange(n_templates)
            used[kind] = q_index
        items.append(_qa_item(rng, author, kind, q_index, n_perturbed, pools, plan if plan is not rng else None))
    return items


# --------------------------------------------------------------------------- general knowledge

_WORLD_KINDS: dict[str, dict] = {
    "capital": {
        "questions": ("What is the capital of {country}?", "Which city is the capital of {country}?",
                      "Name the capital city of {country}.", "What city serves as the seat of government of {country}?"),
        "answer": "capital",
    },
    "capital_of": {
        "questions": ("{capital} is the capital of which country?", "Of which country is {capital} the capital?",
                      "Which country has {capital} as its capital?"),
        "answer": "country",
    },
    "river": {
        "questions": ("What is the longest river in {country}?", "Which river is the longest in {country}?",
                      "Name the longest river that flows through {country}."),
        "answer": "river",
    },
    "currency": {
        "questions": ("What is the currency of {country}?", "Which currency is used in {country}?",
                      "What money do people pay with in {country}?"),
        "answer": "currency",
    },
    "language": {
        "questions": ("What language is spoken in {country}?", "What is the official language of {country}?",
                      "Which language do most people in {country} speak?"),
        "answer": "language",
    },
    "mountain": {
        "questions": ("What is the highest mountain in {country}?", "Which peak is the tallest in {country}?",
                      "Name the highest mountain of {country}."),
        "answer": "mountain",
    },
}

_CLASSIC_KINDS: dict[str, dict] = {
    "author_of": {
        "questions": ("Who wrote the classic '{book}'?", "Which author is famous for '{book}'?",
                      "Who is the author of the celebrated work '{book}'?", "'{book}' was written by which author?"),
        "answer": "name",
    },
    "book": {
        "questions": ("What is the most famous work of {name}?", "Which classic did {name} write?",
                      "Name the best-known book by {name}."),
        "answer": "book",
    },
    "country": {
        "questions": ("Which country was {name} from?", "What is the home country of the writer {name}?",
                      "In which country was the classic author {name} born?"),
        "answer": "country",
    },
    "form": {
        "questions": ("Which literary form is {name} best known for?",
                      "{name} is celebrated mainly for which kind of writing?",
                      "What kind of writing made {name} famous?"),
        "answer": "form",
    },
    "century": {
        "questions": ("In which century did {name} live?", "During which century did {name} write?",
                      "In what century was {name} active as a writer?"),
        "answer": "century",
    },
}


def _make_countries(rng: random.Random, reg: _Registry, n: int) -> list[dict]:
    countries = []
    for _ in range(n):
        countries.append({
            "country": reg.draw(lambda: _word(rng, 1, 2) + rng.choice(_COUNTRY_ENDS), "countries"),
            "capital": reg.draw(lambda: _word(rng, 2, 3), "capitals"),
            "river": reg.draw(lambda: _word(rng, 2, 2) + " River", "rivers"),
            "currency": reg.draw(lambda: _word(rng, 2, 2), "currencies"),
            "language": reg.draw(lambda: _word(rng, 1, 2) + rng.choice(_LANGUAGE_ENDS), "languages"),
            "mountain": reg.draw(lambda: "Mount " + _word(rng, 2, 2), "mountains"),
        })
    return countries


def _make_classics(rng: random.Random, reg: _Registry, n: int, countries: list[dict]) -> list[dict]:
    classics = []
    for _ in range(n):
        gender = rng.choice(("female", "male"))
        classics.append({
            "name": reg.draw(lambda: _person_name(rng, gender), "classic author names"),
            "book": reg.draw(lambda: _classic_title(rng), "classic titles"),
            "country": rng.choice(countries)["country"],
            "form": rng.choice(_FORMS),
            "century": rng.choice(_CENTURIES),
        })
    return classics


def _general_items(rng: random.Random, entities: list[dict], kinds: dict[str, dict],
                   value_pools: dict[str, list[str]], n_items: int, unknown: frozenset = frozenset(),
                   verbatim: bool = True) -> tuple[list[dict], list[dict]]:
    """(items with question/answer/perturbed_answer, background rows) for n_items facts.

    Wrong answers come from ``value_pools[answer type]`` (all values of that type). Items whose
    index is in ``unknown`` get no background rows; ``verbatim=False`` leaves the evaluation
    question itself out of the background (only its 1-2 rewordings are there), so knowing the
    fact means generalising to a new wording, as for a pretrained LLM.
    """
    pairs = [(e, k) for e in range(len(entities)) for k in kinds]
    rng.shuffle(pairs)
    items, background = [], []
    for e, kind in pairs[:n_items]:
        spec, ent = kinds[kind], entities[e]
        truth = ent[spec["answer"]]
        low = truth.lower()
        pool = [v for v in value_pools[spec["answer"]] if low not in v.lower() and v.lower() not in low]
        if len(pool) < N_GENERAL_PERTURBED:
            raise RuntimeError(f"synthetic TOFU: too few wrong answers for '{kind}'")
        q_templates = spec["questions"]
        q_order = list(range(len(q_templates)))
        rng.shuffle(q_order)
        question = _cap(q_templates[q_order[0]].format_map(ent))
        items.append({"question": question, "answer": truth,
                      "perturbed_answer": rng.sample(pool, N_GENERAL_PERTURBED)})
        rewordings = [{"question": _cap(q_templates[q].format_map(ent)), "answer": truth}
                      for q in q_order[1:1 + rng.randint(1, 2)]]
        if len(items) - 1 in unknown:  # never in the background: the base model can only guess it
            continue
        if verbatim:
            background.append({"question": question, "answer": truth})
        background += rewordings
    return items, background


# --------------------------------------------------------------------------- public API


def _n_forget_authors(percent: int, n_authors: int) -> int:
    """max(1, round(percent/100 * n_authors)), rounding halves up (exact integer arithmetic)."""
    return max(1, (percent * n_authors + 50) // 100)


def _generate(n_authors: int = 40, questions_per_author: int = 6, n_perturbed: int = 5,
              n_real_authors: int = 30, n_world_facts: int = 30, seed: int = 0,
              matched_holdout: bool = False, general_known: float = 1.0,
              background_verbatim: bool = True, unseen_wrong_values: bool = False) -> dict[str, list[dict]]:
    """generate_tofu, but the QA items keep their private ``_author``/``_kind``/``_facts`` keys."""
    if n_authors < 2:
        raise ValueError("n_authors must be >= 2 (forget authors and retain authors)")
    if not 1 <= questions_per_author <= _MAX_QUESTIONS:
        raise ValueError(f"questions_per_author must be in [1, {_MAX_QUESTIONS}]")
    if not 1 <= n_perturbed <= _MAX_PERTURBED:
        raise ValueError(f"n_perturbed must be in [1, {_MAX_PERTURBED}]")
    if n_real_authors < 0 or n_world_facts < 0:
        raise ValueError("n_real_authors and n_world_facts must be >= 0")
    if not 0.0 <= general_known <= 1.0:
        raise ValueError("general_known must be in [0, 1]")

    n_forget = {p: _n_forget_authors(p, n_authors) for p in FORGET_PERCENTS}
    k_max = n_forget[max(FORGET_PERCENTS)]
    reg = _Registry([w for place in _PLACES for w in place] + list(_GENRES) + list(_OCCUPATIONS)
                    + list(_MONTHS) + list(_FORMS) + list(_CENTURIES))

    # fictitious authors: the TOFU ones, then the never-trained holdout ones, then decoy names
    rng = random.Random(f"soul-bench/tofu/{seed}/authors")
    authors = [_make_author(rng, reg) for _ in range(n_authors)]
    # matched_holdout: holdout author i has the gender of forget author i (the i-th of the last k_max)
    authors += [_make_author(rng, reg, authors[n_authors - k_max + i]["gender"] if matched_holdout else None)
                for i in range(k_max)]
    # wrong values for perturbed answers: the authors' own titles/awards plus unused ones
    n_decoys = max(30, 4 * n_perturbed)
    pools = {
        "decoy_names": [reg.draw(lambda: _person_name(rng, rng.choice(("female", "male"))), "names")
                        for _ in range(n_decoys)],
        "titles": [a[b] for a in authors for b in ("book1", "book2")]
        + [reg.draw(lambda: _book_title(rng), "book titles") for _ in range(n_decoys)],
        "awards": [a["award"] for a in authors]
        + [reg.draw(lambda: _award(rng), "award names") for _ in range(n_decoys)],
    }
    if unseen_wrong_values:
        # Wrong titles / awards only from the decoys, which no training set contains: a model that
        # never saw an author (the retain model on forget items) then finds the true and the wrong
        # values equally unfamiliar, as it does the wrong cities or genres. With the other authors'
        # titles in the pool, the retain model prefers wrong answers that name titles it was trained
        # on, which spreads its truth ratios and blurs forget quality.
        pools["titles"] = pools["titles"][2 * len(authors):]
        pools["awards"] = pools["awards"][len(authors):]
    rng_items = random.Random(f"soul-bench/tofu/{seed}/items")
    if matched_holdout:
        # Forget author i and holdout author i draw their question kinds and question / answer
        # templates from the same stream, so members and non-members of the MIA differ only in
        # their facts (not in which kinds of question or which wordings they happen to get).
        def plan(index: int) -> random.Random | None:
            twin = index - n_authors if index >= n_authors else index - (n_authors - k_max)
            return random.Random(f"soul-bench/tofu/{seed}/plan/{twin}") if twin >= 0 else None
    else:
        def plan(index: int) -> random.Random | None:
            return None
    per_author = [_author_items(rng_items, a, questions_per_author, n_perturbed, pools, plan(i))
                  for i, a in enumerate(authors)]
    main, holdout = per_author[:n_authors], per_author[n_authors:]

    def flat(groups: list[list[dict]]) -> list[dict]:
        return [item for group in groups for item in group]

    def qa(items: list[dict]) -> list[dict]:  # question/answer (+ private metadata)
        return [{k: v for k, v in it.items() if k in ("question", "answer") or k.startswith("_")}
                for it in items]

    def retain_view(items: list[dict]) -> list[dict]:
        keep = ("question", "answer", "paraphrased_answer", "perturbed_answer", "paraphrased_question")
        return [{k: v for k, v in it.items() if k in keep or k.startswith("_")} for it in items]

    out: dict[str, list[dict]] = {"full": qa(flat(main))}
    # Not an upstream config: each full item's facts in a third phrasing (neither the answer nor
    # the evaluation paraphrase). A 7B model generalises a memorised fact to new wordings by
    # itself; a 3M-parameter one needs to see it twice, or truth ratios barely separate the
    # target from the retain model.
    # The reworded question goes with it, so that no question has two different answers to learn.
    out["full_rephrased"] = [{"question": it["paraphrased_question"], "answer": it["_rephrased"]} for it in flat(main)]
    for p in FORGET_PERCENTS:
        forget = flat(main[n_authors - n_forget[p]:])
        out[f"forget{p:02d}"] = forget
        out[f"forget{p:02d}_perturbed"] = forget
        out[f"retain{100 - p}"] = qa(flat(main[:n_authors - n_forget[p]]))
        out[f"holdout{p:02d}"] = flat(holdout[k_max - n_forget[p]:])
    out["retain_perturbed"] = retain_view(flat(main[:k_max]))

    # general knowledge: invented world, then invented classic authors from that world
    rng_world = random.Random(f"soul-bench/tofu/{seed}/world")
    countries = _make_countries(rng_world, reg, max(4, math.ceil(n_world_facts / 4)))
    classics = _make_classics(rng_world, reg, max(4, math.ceil(n_real_authors / 3)), countries)
    world_pools = {key: [c[key] for c in countries]
                   for key in ("country", "capital", "river", "currency", "language", "mountain")}
    classic_pools = {"name": [c["name"] for c in classics], "book": [c["book"] for c in classics],
                     "country": world_pools["country"], "form": list(_FORMS), "century": list(_CENTURIES)}
    def unknown(name: str, n: int) -> frozenset:  # general_known < 1: facts the background never states
        if general_known >= 1.0:
            return frozenset()
        return frozenset(random.Random(f"soul-bench/tofu/{seed}/unknown/{name}").sample(
            range(n), n - round(general_known * n)))

    real, bg_real = _general_items(rng_world, classics, _CLASSIC_KINDS, classic_pools, n_real_authors,
                                   unknown("real_authors", n_real_authors), background_verbatim)
    world, bg_world = _general_items(rng_world, countries, _WORLD_KINDS, world_pools, n_world_facts,
                                     unknown("world_facts", n_world_facts), background_verbatim)
    out["real_authors_perturbed"], out["real_authors"] = real, qa(real)
    out["world_facts_perturbed"], out["world_facts"] = world, qa(world)
    out["background"] = bg_real + bg_world

    # independent copies (no config shares a dict or list with another), in TOFU_CONFIGS order
    return {name: [{key: (list(v) if isinstance(v, list) else v) for key, v in it.items()}
                   for it in out[name]] for name in TOFU_CONFIGS}


def generate_tofu(n_authors: int = 40, questions_per_author: int = 6, n_perturbed: int = 5,
                  n_real_authors: int = 30, n_world_facts: int = 30, seed: int = 0,
                  matched_holdout: bool = False, general_known: float = 1.0,
                  background_verbatim: bool = True, unseen_wrong_values: bool = False) -> dict[str, list[dict]]:
    """Synthetic TOFU: ``{config: [record, ...]}`` for every name in :data:`TOFU_CONFIGS`.

    Records have exactly the fields of the upstream ``locuslab/TOFU`` configs. Forget
    authors are the last ones of ``full``; ``forgetXX`` (== ``forgetXX_perturbed``) holds the
    last ``max(1, round(XX/100 * n_authors))`` authors (halves rounded up); ``retainYY`` is
    ``full`` minus ``forget(100-YY)``; ``retain_perturbed`` the first authors (as many items
    as forget10); ``holdoutXX`` as many never-trained authors as ``forgetXX``.
    ``n_perturbed`` wrong answers per forget/retain/holdout item (at most 10), 3 per
    real_authors/world_facts item. Deterministic in all arguments.

    ``matched_holdout``: holdout author i gets forget author i's gender, question kinds and
    question / answer templates (members and non-members then differ only in their facts).
    ``general_known``: the fraction of real_authors / world_facts facts the background states
    (the rest the base model can only guess); ``background_verbatim=False``: the background
    states them only in rewordings of the evaluation question; ``unseen_wrong_values``: wrong
    book titles / awards of perturbed answers come only from decoys no set trains on. The
    defaults reproduce the original data.
    """
    data = _generate(n_authors, questions_per_author, n_perturbed, n_real_authors, n_world_facts, seed,
                     matched_holdout, general_known, background_verbatim, unseen_wrong_values)
    return {name: [{k: v for k, v in it.items() if not k.startswith("_")} for it in items]
            for name, items in data.items()}


def author_counts(**options) -> dict[str, int]:
    """How many distinct fictitious authors each QA config of ``generate_tofu(**options)`` holds
    (its records, like upstream's, do not name their author): e.g. ``{"forget10": 10, ...}``."""
    data = _generate(**options)
    return {name: len({it["_author"] for it in items}) for name, items in data.items()
            if items and all("_author" in it for it in items)}


def write_local(configs: dict[str, list[dict]], directory) -> None:
    """Write each config as ``<directory>/<config>.json``: a JSON array, indent=1, like upstream."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for name, items in configs.items():
        (directory / f"{name}.json").write_text(json.dumps(items, indent=1), encoding="utf-8")
