"""Offline generator of two synthetic books (the embedded default of the ``copyright`` task).

The copyright task of SOUL (Jia et al. 2024, "SOUL: Unlocking the Power of Second-Order
Optimization for LLM Unlearning", arXiv 2404.18239), after Eldan & Russinovich's "Who's
Harry Potter?", starts from a model that has memorised a book: prompted with the first L
words of a passage it continues it verbatim. Unlearning must stop that (ROUGE-L recall and
BLEU of the greedy continuation against the true rest of the passage fall) while the model
keeps continuing *another* book and keeps its general ability. Upstream the user supplies
the books; the embedded offline default of soul-bench instead trains a tiny Llama (~128
hidden, 4 layers, byte-level BPE with a ~1500-token vocabulary) on the CPU until it
reproduces the passages of this module's books. MUSE (Shi et al. 2024, "MUSE: Machine
Unlearning Six-Way Evaluation for Language Models", arXiv 2407.06460) reuses the same books
and needs questions about the facts they state (its KnowMem), so the books come with those
too. Everything is deterministic, stdlib-only and offline.

The world (``generate_books``): two books written by the same generator, so they share the
style, the sentence structures and the common vocabulary, but nothing of the content.

* Each book has a cast of 8 characters and 6 towns, with names coined from syllable pools
  ("Delmira", "Tovrin", "Bastmere", ...). Every coined name is at least 5 letters long, no
  coined name is a substring of another (case blind), of another book's names or of any word
  of the fixed text (templates and pools): a name of book A therefore never occurs anywhere
  in book B, and vice versa.
* Facts of the world: a character has a trade ("weaver"), a home town (one of the book's
  towns), a companion animal ("grey goose"), a keepsake ("brass compass") and an oldest
  friend (the cast is paired off); a town has a landmark ("leaning bell tower") and goods it
  is famous for ("smoked eels"). Within a book these values are distinct; landmarks and goods
  are also distinct across the two books. 8 * 5 + 6 * 2 = 52 facts per book.
* A passage is one scene: a town, a focal character and a second one. It opens with a scene
  sentence about the town and goes on with event sentences and dialogue ('"Bring the rusty
  lamp to the mill," said Delmira.'; at least one line of dialogue per passage), drawn from
  ~60 sentence templates whose slots come from pools of verbs, objects, adjectives, places,
  times, sounds and utterances: ~550 distinct words beyond the names, so a 1500-token
  byte-level BPE trained on the books covers them at ~1.25 tokens per word.
  A passage states three facts -- one of its town (in the opening), one of each of its
  two characters (as an apposition of a sentence subject: "Delmira, the weaver, hid ...") --
  always the facts of those entities stated least so far in the book, so the facts are spread
  evenly over the passages (a character fact whose sentence does not fit the word budget is
  left out: 15 % of the passages state only two facts at 40 words a passage, none at 64).
  Nothing else in a passage is predictable from the other passages: the mean ROUGE-L recall
  between the last 75 % of a passage and the last 75 % of another random passage of the same
  book is ~0.17 (0.15-0.19 over seeds; identical text: 1.0), and at most ~1 % of the
  sentences occur in more than one passage (none with the defaults).
* Every passage has between ``max(40, ceil(0.9 * w))`` and ``floor(1.1 * w)``
  whitespace-separated words (``w = words_per_passage >= 40``): sentences are added until
  the lower bound is reached, never past the upper one (short sentences fill the gap).

Sets (``BOOK_SETS``):

* ``forget_book``: ``{"id": "forget-000", "text": passage}`` -- passages of book A, the one
  the model memorises and then has to unlearn, in story order.
* ``holdout_book``: ``{"id": "holdout-000", "text": ...}`` -- further passages of book A
  (same cast, towns and generator) that are never trained on: the non-members of
  membership-inference attacks. ``n_forget_passages + n_holdout_passages`` passages of book A
  are generated as one book and then split by a seeded shuffle (story order kept within each
  set), so forget and holdout passages are exchangeable: a membership attack can only tell
  them apart by what training did, not by the position in the book or by the content.
* ``retain_book``: ``{"id": "retain-000", "text": ...}`` -- book B (its own cast and towns),
  which the model must keep reproducing.
* ``forget_qa`` / ``retain_qa``: ``{"id": "forget-qa-000", "question", "answer",
  "passage_id"}`` -- one short-answer question per distinct fact stated in the set's book
  passages ("What is Delmira's trade?" -> "weaver"), attached to the first passage (in story
  order) that states it; the answer (1-4 words) occurs verbatim in that passage and never in
  the question. With the defaults: 48 forget and 51 retain questions (of 52 facts each;
  47-52 over seeds).

Budget: with the defaults (40 forget + 40 holdout + 40 retain passages, 64 words a passage,
so 58-70 words each, ~63 on average) each set has ~2.5k words and ~14.8k characters (~3.1k
BPE tokens with a 1500-token vocabulary); the two trained books are 80 passages, ~5k words,
~29.7k characters, ~6.3k tokens per epoch -- small enough for a 128-hidden 4-layer Llama to
memorise on a CPU.

All randomness comes from ``random.Random`` instances seeded from ``seed`` (nothing global,
no set-order dependence): the same arguments give identical output, another seed other
books. The names and facts of both books depend only on ``seed``; the passages of book A on
``seed`` and ``n_forget_passages + n_holdout_passages`` (the split on the two counts), those
of book B on ``seed`` and ``n_retain_passages`` -- never on the other book's counts. A book
grows by appending: its first k passages are the same for every passage count >= k.
"""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path
from typing import Callable

__all__ = ["BOOK_SETS", "FACT_RELATIONS", "MIN_WORDS", "generate_books", "write_local"]

BOOK_SETS: tuple[str, ...] = ("forget_book", "holdout_book", "retain_book", "forget_qa", "retain_qa")
MIN_WORDS = 40  # the shortest passage and the smallest words_per_passage
N_CHARACTERS = 8  # per book, paired off as oldest friends (even)
N_TOWNS = 6  # per book
_MIN_NAME = 5  # shortest coined name
_BOOKS = ("A", "B")  # book A: forget + holdout, book B: retain

# --------------------------------------------------------------------------- facts
# Per relation: the value pool, the appositions / phrases that state it in a passage (the
# value verbatim) and the questions that ask for it (never containing the value).
# Placeholders: {n} the character's (town's) name, {v} the value, {art} "a"/"an" for it.

FACT_RELATIONS: dict[str, dict] = {
    "trade": {
        "entity": "character",
        "pool": ("weaver", "baker", "ferryman", "blacksmith", "potter", "miller", "fisher", "carpenter", "healer",
                 "shepherd", "tanner", "brewer", "mason", "cobbler", "glassblower", "candlemaker", "beekeeper",
                 "boatwright"),
        "mentions": ("{n}, the {v},", "{n} the {v}", "{n}, {art} {v} by trade,"),
        "questions": ("What is {n}'s trade?", "What work does {n} do?"),
    },
    "home": {
        "entity": "character",
        "pool": "towns",
        "mentions": ("{n} of {v}", "{n}, who came from {v},", "{n}, born in {v},"),
        "questions": ("Which town does {n} come from?", "What is {n}'s home town?"),
    },
    "companion": {
        "entity": "character",
        "pool": ("grey goose", "lame dog", "black cat", "old mule", "tame crow", "white goat", "red fox",
                 "brown pony", "small owl", "spotted pig", "one-eyed hound", "little ferret", "green parrot",
                 "shaggy sheepdog"),
        "mentions": ("{n}, followed by {art} {v},", "{n}, with {art} {v} close behind,",
                     "{n}, trailed as always by {art} {v},"),
        "questions": ("What animal follows {n} around?", "Which animal goes everywhere with {n}?"),
    },
    "keepsake": {
        "entity": "character",
        "pool": ("brass compass", "silver ring", "blue scarf", "wooden flute", "iron key", "leather satchel",
                 "copper lantern", "green cloak", "bone comb", "glass locket", "folded map", "tin whistle",
                 "red notebook", "pocket watch"),
        "mentions": ("{n}, who always carried {art} {v},", "{n}, never without {art} {v},"),
        "questions": ("What does {n} always carry?", "What object is {n} never without?"),
    },
    "friend": {
        "entity": "character",
        "pool": "cast",
        "mentions": ("{n}, whose oldest friend was {v},", "{n}, the oldest friend of {v},"),
        "questions": ("Who is {n}'s oldest friend?", "Who has been friends with {n} the longest?"),
    },
    "landmark": {
        "entity": "town",
        "pool": ("leaning bell tower", "old stone bridge", "broken windmill", "copper dome", "twin lighthouses",
                 "great oak", "sunken chapel", "white cliffs", "stone circle", "clock tower", "hanging gardens",
                 "ruined castle", "painted gate", "marble fountain", "salt caves", "glass greenhouse"),
        "mentions": ("{n}, where the {v} stood,", "{n}, in the shadow of the {v},"),
        "questions": ("What landmark stands in {n}?", "What is the best-known sight of {n}?"),
    },
    "goods": {
        "entity": "town",
        "pool": ("smoked eels", "blue dye", "apple cider", "river pearls", "goat cheese", "honey cakes",
                 "linen cloth", "clay pots", "wool blankets", "pickled herring", "walnut oil", "straw hats",
                 "copper pans", "lavender soap", "plum brandy", "salt fish"),
        "mentions": ("{n}, famous for its {v},", "{n}, a town known for its {v},", "{n}, where everyone sold {v},"),
        "questions": ("What is {n} famous for?", "What is {n} known for?"),
    },
}
_CHARACTER_RELATIONS = tuple(r for r, s in FACT_RELATIONS.items() if s["entity"] == "character")
_TOWN_RELATIONS = tuple(r for r, s in FACT_RELATIONS.items() if s["entity"] == "town")

# --------------------------------------------------------------------------- word pools

_NOUNS = ("basket", "rope", "jar", "lamp", "coin", "letter", "knife", "barrel", "blanket", "bell", "bucket",
          "candle", "ladder", "net", "loaf", "apple", "boot", "bottle", "box", "feather", "hammer", "kettle",
          "mirror", "needle", "oar", "pipe", "plank", "sack", "saddle", "shell", "spoon", "stone", "wheel", "book",
          "cup", "drum", "sail", "chain", "brush", "cart")
_PLURAL = {"knife": "knives", "loaf": "loaves", "box": "boxes", "brush": "brushes"}
_ADJECTIVES = ("old", "cracked", "heavy", "small", "rusty", "wet", "broken", "painted", "empty", "green", "red",
               "tiny", "crooked", "dusty", "bright", "cold", "wooden", "clean", "torn", "huge", "yellow", "muddy",
               "sticky", "strange", "new", "stolen")
_LOCATIONS = ("the mill", "the harbour", "the chapel", "the bakery", "the east gate", "the well", "the orchard",
              "the ferry landing", "the inn", "the market square", "the granary", "the watchtower", "the river bank",
              "the smithy", "the stables", "the old quarry", "the fish market", "the town hall", "the bathhouse",
              "the ropewalk", "the cellar", "the hayloft", "the schoolhouse", "the north road")
_PREPOSITIONS = ("near", "behind", "beside", "inside", "outside", "below", "beyond")
_TIMES = ("at dawn", "before noon", "after the storm", "late that night", "on the third morning", "at first light",
          "after supper", "before the rain", "on market day", "at midnight", "that evening", "the next morning",
          "long after sunset", "during the fair", "in the grey hour before supper", "just before the tide")
_MOVE = ("walked", "ran", "hurried", "rode", "rowed", "crept", "wandered", "marched", "limped", "drifted", "raced",
         "stumbled", "strolled", "climbed")
_INTRANSITIVE = ("laughed", "sighed", "paused", "knelt", "shivered", "listened", "nodded", "smiled", "frowned",
                 "waited", "coughed", "hesitated", "whistled", "shrugged", "yawned", "sang", "wept")
_ADVERBS = ("softly", "slowly", "quietly", "loudly", "briefly", "nervously", "gravely", "happily", "wearily",
            "suddenly", "twice", "again")
_OBJECT_VERBS = (("carried", "carried"), ("hid", "hidden"), ("mended", "mended"), ("sold", "sold"),
                 ("buried", "buried"), ("found", "found"), ("dropped", "dropped"), ("broke", "broken"),
                 ("stole", "stolen"), ("took", "taken"), ("painted", "painted"), ("opened", "opened"),
                 ("lost", "lost"), ("cleaned", "cleaned"), ("weighed", "weighed"), ("wrapped", "wrapped"),
                 ("tied", "tied"), ("polished", "polished"), ("borrowed", "borrowed"), ("filled", "filled"),
                 ("emptied", "emptied"), ("burned", "burned"), ("washed", "washed"), ("fetched", "fetched"),
                 ("dragged", "dragged"), ("lifted", "lifted"), ("shook", "shaken"), ("threw", "thrown"),
                 ("forgot", "forgotten"), ("sharpened", "sharpened"))
_GERUNDS = ("mending", "counting", "sorting", "painting", "cleaning", "stacking", "washing", "carving", "selling",
            "gathering", "polishing", "drying")
_FEELINGS = ("angry", "tired", "afraid", "glad", "restless", "curious", "worried", "proud", "hungry", "sullen",
             "cheerful", "uneasy")
_NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve")
_WEATHER = (("rain", "drummed"), ("wind", "howled"), ("fog", "hung"), ("snow", "fell"), ("mist", "drifted"),
            ("heat", "pressed"), ("thunder", "rolled"), ("hail", "rattled"), ("frost", "settled"),
            ("smoke", "hung"))
_TOWN_STATES = ("quiet", "crowded", "half asleep", "full of smoke", "loud with gulls", "strangely empty",
                "busy with carts", "wet and grey", "bright with lanterns", "silent", "muddy and cold",
                "full of rumours")
_SURFACES = ("table", "bench", "floor", "shelf", "step", "windowsill", "counter", "doorstep")
_SOUNDS = ("a loud crash", "wheels rattling", "someone singing", "a bell ringing", "heavy footsteps",
           "a low whistle", "children laughing", "a door slamming", "a kettle hissing", "glass breaking")
_DAYPARTS = ("morning", "afternoon", "evening", "night", "whole day")
_DEADLINES = ("the end of the week", "the next full moon", "spring", "the first frost", "market day",
              "the harvest", "midsummer")
_UNTIL = ("the bells rang", "the moon rose", "the rain stopped", "the fire went out", "the boats came in",
          "the market closed", "the candles burned low", "the tide turned")
_ROAD_STATES = ("flooded", "closed", "muddy", "blocked", "safe again", "full of thieves", "too long")
_INTERJECTIONS = ("Wait", "Listen", "Hurry", "Enough", "Look", "Quiet", "Come on", "Not yet", "Too late",
                  "Of course", "Never", "Stop")
_SAY_VERBS = ("said", "whispered", "shouted", "muttered", "replied", "warned", "called", "added")

# --------------------------------------------------------------------------- sentence templates
# {S}: the subject (a character's name, or the name with a fact apposition); {a}: the same
# character's bare name; {o} / {o2}: other characters; {T}: the scene's town (possibly with a
# fact apposition); {town}: any town of the book. Other slots draw from the pools (_Slots).

# Subject-initial sentences: these can carry a character fact (as an apposition of {S}).
_SUBJECT_SENTENCES = (
    "{S} {vm} to {loc} {time}.",
    "{S} {vo} {obj} {prep} {loc}.",
    "{S} found {obj} {prep} {loc} and showed it to {o}.",
    "{S} {vo} {obj} while {o} {vi} {prep} {loc}.",
    "{S} was {feel} because {o} had {vpp} the {noun}.",
    "{S} told {o} about the {adj} {noun} {prep} {loc}.",
    "{S} waited {prep} {loc} until {until}.",
    "{S} and {o} {vm} through the streets of {town} {time}.",
    "{S} asked {o} for {obj}, but {o} only {vi}.",
    "{S} counted {num} {nouns} on the {surface} and frowned.",
    "{S} looked for {o} at {loc}, but found only {obj}.",
    "{S} {vm} past {loc} without a word.",
    "{S} {vo} the {noun} and gave it to {o}.",
    "{S} had never trusted {o} with {obj}.",
    "{S} {vi} {adv} when {o} {vm} in.",
    "{S} spent the {daypart} {ving} {nouns} {prep} {loc}.",
    "{S} promised {o} {num} {nouns} by {deadline}.",
    "{S} {vo} {obj}, then {vm} back to {loc}.",
    "{S} left {obj} on the {surface} for {o}.",
    "{S} {vm} all the way to {town} with {obj} under one arm.",
    "{S} stood {prep} {loc} and {vi} {adv}.",
    "{S} heard {sound} from {loc}.",
    "{S} traded {obj} for {obj2} at {loc}.",
    "{S} woke {time} and {vm} to {loc}.",
    "{S} did not tell {o} about the {nouns} {prep} {loc}.",
    "{S} {vo} {num} {nouns} before {o} could say a word.",
    "{S} {say}, \"{U}.\"",
    "{S} asked {o}, \"{Q}?\"",
    "{S} turned to {o} and {say}, \"{U}.\"",
)
_SUBJECT_DIALOGUE = tuple(t for t in _SUBJECT_SENTENCES if '"' in t)
# Other sentences (no fact).
_OTHER_SENTENCES = (
    "{Time}, {a} {vm} to {loc}.",
    "{Time}, {o} {vo} {obj} {prep} {loc}.",
    "The {weather} {wverb} over {town} {time}.",
    "Nobody in {town} had seen {obj} like that before.",
    "Behind {loc}, {a} and {o} {vo} {obj}.",
    "When {o} came back from {town}, {a} was still {ving} {nouns}.",
    "There were {num} {nouns} {prep} {loc}, and one of them was {adj}.",
    "In the end, {a} {vo} the {noun} and {o} {vi}.",
    "By {daypart}, the {noun} was {adj} and {a} was {feel}.",
    "Somewhere {prep} {loc}, {sound} made {a} look up.",
)
# Dialogue: the subject-initial lines above and these.
_DIALOGUE = _SUBJECT_DIALOGUE + (
    "\"{U},\" said {a}.",
    "\"{U},\" {a} told {o}.",
    "\"{U},\" {say} {a}.",
    "\"{Q}?\" asked {a}.",
    "\"{U}!\" shouted {a}.",
)
_UTTERANCES = (
    "the {noun} is gone", "we leave for {town} {time}", "bring {obj} to {loc}", "I saw {o2} near {loc}",
    "nobody goes to {loc} after dark", "the {noun} belongs to {o2}", "keep the {nouns} away from {loc}",
    "we need {num} more {nouns}", "this {noun} is too {adj}", "{o2} hid the {noun} {prep} {loc}",
    "the {nouns} will not last until {deadline}", "tell {o2} to meet me at {loc}",
    "I have never seen {obj} like this", "the road to {town} is {road}", "give me the {noun} and go home",
    "{o2} was right about the {nouns}",
)
_QUESTIONS = (
    "where is the {noun}", "who left {obj} at {loc}", "why did {o2} go to {town}", "have you seen {o2} {time}",
    "how many {nouns} are left", "what happened at {loc}", "is the {noun} still {adj}",
    "when does the boat leave for {town}", "did {o2} take the {noun}", "who told you about the {nouns}",
)
# Scene openings: {T} is never at the end of the sentence (its apposition may end in a comma).
_OPENINGS = (
    "{Time}, {T} was {tstate}.",
    "The {weather} {wverb} over {T} {time}.",
    "News of the {adj} {noun} reached {T} {time}.",
    "{Time}, {a} {vm} into {T} with {obj}.",
    "Few people in {T} were awake {time}.",
    "For {num} days, {T} had been {tstate}.",
    "{Time}, the streets of {T} were {tstate}.",
)
# Short sentences (3-5 words) that close the gap to the lower word bound.
_FILLERS = (
    "{a} {vi} {adv}.", "\"{interj},\" said {a}.", "The {noun} was {adj}.", "{a} {vi} beside the {noun}.",
    "Then {a} {vi}.", "{a} {vo} the {noun}.", "\"{interj},\" {a} {say}.", "{a} {vi} {adv} again.",
)
_DIALOGUE_FILLERS = tuple(t for t in _FILLERS if '"' in t)

# --------------------------------------------------------------------------- names

_ONSETS = ("b", "br", "d", "dr", "f", "g", "gr", "h", "k", "l", "m", "n", "p", "r", "s", "t", "tr", "v", "w", "z",
           "c", "st", "th", "j")
_INNER = ("l", "r", "m", "n", "v", "s", "t", "d", "th", "lv", "rn", "nd", "st", "rw", "br")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ei", "ia")
_CHARACTER_ENDS = ("a", "o", "in", "el", "is", "wen", "ric", "an", "ia", "et", "or", "ard", "ine", "ys")
_TOWN_CODAS = ("", "", "n", "r", "l", "s")
_TOWN_ENDS = ("mere", "ford", "wick", "holm", "dale", "by", "ton", "stead", "moor", "bury", "crest", "gard")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def _plural(noun: str) -> str:
    return _PLURAL.get(noun, noun + "s")


def _character_name(rng: random.Random) -> str:
    parts = [rng.choice(_ONSETS), rng.choice(_VOWELS)]
    if rng.random() < 0.7:
        parts += [rng.choice(_INNER), rng.choice(_VOWELS)]
    return _cap("".join(parts).rstrip("aeiou") + rng.choice(_CHARACTER_ENDS))


def _town_name(rng: random.Random) -> str:
    parts = [rng.choice(_ONSETS), rng.choice(_VOWELS), rng.choice(_TOWN_CODAS)]
    if rng.random() < 0.3:
        parts += [rng.choice(_INNER), rng.choice(_VOWELS)]
    return _cap("".join(parts) + rng.choice(_TOWN_ENDS))


def _fixed_text() -> list[str]:
    """Every string of the fixed text: templates, pools, fact phrases and questions."""
    text = [*_NOUNS, *_PLURAL.values(), *_ADJECTIVES, *_LOCATIONS, *_PREPOSITIONS, *_TIMES, *_MOVE,
            *_INTRANSITIVE, *_ADVERBS, *(w for pair in _OBJECT_VERBS for w in pair), *_GERUNDS, *_FEELINGS,
            *_NUMBERS, *(w for pair in _WEATHER for w in pair), *_TOWN_STATES, *_SURFACES, *_SOUNDS, *_DAYPARTS,
            *_DEADLINES, *_UNTIL, *_ROAD_STATES, *_INTERJECTIONS, *_SAY_VERBS, *_SUBJECT_SENTENCES,
            *_OTHER_SENTENCES, *_UTTERANCES, *_QUESTIONS, *_OPENINGS, *_FILLERS]
    for spec in FACT_RELATIONS.values():
        text += [*spec["mentions"], *spec["questions"]]
        if isinstance(spec["pool"], tuple):
            text += spec["pool"]
    return text


class _Registry:
    """Coined names, kept pairwise non-nested and off the fixed text (case blind).

    Seeded with every word of the fixed text of at least ``_MIN_NAME`` letters; every name is
    at least that long, so a name never occurs inside any other word of either book.
    """

    def __init__(self, fixed_text: list[str]):
        self._low: list[str] = sorted({w.lower() for t in fixed_text for w in re.findall(r"[A-Za-z]+", t)
                                       if len(w) >= _MIN_NAME})

    def draw(self, rng: random.Random, coin: Callable[[random.Random], str], what: str) -> str:
        for _ in range(5000):
            name = coin(rng)
            low = name.lower()
            if len(low) >= _MIN_NAME and not any(low in o or o in low for o in self._low):
                self._low.append(low)
                return name
        raise RuntimeError(f"synthetic books: ran out of distinct {what}")


# --------------------------------------------------------------------------- the world


def _build(seed: int) -> dict:
    """Both books' worlds: ``{"A": world, "B": world}``; a world has ``cast``, ``towns`` and
    ``facts`` (``{(entity, relation): value}``). Depends on ``seed`` only."""
    reg = _Registry(_fixed_text())
    names = {}
    for book in _BOOKS:  # A before B, both of fixed size: neither depends on any count
        rng = random.Random(f"soul-bench/copyright/{seed}/names/{book}")
        names[book] = ([reg.draw(rng, _character_name, "character names") for _ in range(N_CHARACTERS)],
                       [reg.draw(rng, _town_name, "town names") for _ in range(N_TOWNS)])
    # landmarks and goods: distinct across the two books
    shared = {}
    for rel in _TOWN_RELATIONS:
        pool = list(FACT_RELATIONS[rel]["pool"])
        random.Random(f"soul-bench/copyright/{seed}/pool/{rel}").shuffle(pool)
        shared[rel] = {"A": pool[:N_TOWNS], "B": pool[N_TOWNS:2 * N_TOWNS]}
    worlds = {}
    for book in _BOOKS:
        cast, towns = names[book]
        rng = random.Random(f"soul-bench/copyright/{seed}/facts/{book}")
        facts: dict[tuple[str, str], str] = {}
        for rel in ("trade", "companion", "keepsake"):
            for name, value in zip(cast, rng.sample(FACT_RELATIONS[rel]["pool"], N_CHARACTERS)):
                facts[name, rel] = value
        for name in cast:
            facts[name, "home"] = rng.choice(towns)
        order = list(cast)
        rng.shuffle(order)
        for i in range(0, N_CHARACTERS, 2):
            facts[order[i], "friend"], facts[order[i + 1], "friend"] = order[i + 1], order[i]
        for rel in _TOWN_RELATIONS:
            for town, value in zip(towns, shared[rel][book]):
                facts[town, rel] = value
        worlds[book] = {"book": book, "cast": cast, "towns": towns, "facts": facts}
    return worlds


class _Slots(dict):
    """Template slots: each one drawn on first use and then fixed for the sentence."""

    def __init__(self, rng: random.Random, world: dict, subject: str, other: str, town: str, fact=None):
        super().__init__()
        self.rng, self.world, self.subject, self.other, self.town = rng, world, subject, other, town
        self.fact = fact  # (entity, relation) stated by {S} / {T}; None: the bare name
        self.stated: list[tuple[str, str]] = []

    def _mention(self, name: str) -> str:
        if self.fact is None or self.fact[0] != name:
            return name
        rel = self.fact[1]
        value = self.world["facts"][name, rel]
        self.stated.append(self.fact)
        template = self.rng.choice(FACT_RELATIONS[rel]["mentions"])
        return template.format(n=name, v=value, art=_article(value))

    def __missing__(self, key: str) -> str:
        rng, world = self.rng, self.world
        if key == "S":
            value = self._mention(self.subject)
        elif key == "a":
            value = self.subject
        elif key == "o":
            value = self.other
        elif key == "o2":
            value = rng.choice([c for c in world["cast"] if c != self.subject])
        elif key == "T":
            value = self._mention(self.town)
        elif key == "town":
            value = self.town if rng.random() < 0.5 else rng.choice(world["towns"])
        elif key in ("obj", "obj2"):
            adj = rng.choice(_ADJECTIVES)
            value = f"{_article(adj)} {adj} {rng.choice(_NOUNS)}"
        elif key == "noun":
            value = rng.choice(_NOUNS)
        elif key == "nouns":
            value = _plural(rng.choice(_NOUNS))
        elif key in ("vo", "vpp"):
            past, participle = rng.choice(_OBJECT_VERBS)
            value = past if key == "vo" else participle
        elif key in ("weather", "wverb"):
            self["weather"], self["wverb"] = rng.choice(_WEATHER)
            return self[key]
        elif key == "Time":
            value = _cap(rng.choice(_TIMES))
        elif key in ("U", "Q"):
            value = _cap(rng.choice(_UTTERANCES if key == "U" else _QUESTIONS).format_map(self))
        else:
            value = rng.choice(_POOLS[key])
        self[key] = value
        return value


_POOLS: dict[str, tuple[str, ...]] = {
    "loc": _LOCATIONS, "prep": _PREPOSITIONS, "time": _TIMES, "vm": _MOVE, "vi": _INTRANSITIVE, "adv": _ADVERBS,
    "ving": _GERUNDS, "feel": _FEELINGS, "num": _NUMBERS, "tstate": _TOWN_STATES, "surface": _SURFACES,
    "sound": _SOUNDS, "daypart": _DAYPARTS, "deadline": _DEADLINES, "until": _UNTIL, "road": _ROAD_STATES,
    "interj": _INTERJECTIONS, "say": _SAY_VERBS, "adj": _ADJECTIVES,
}


def _sentence(rng: random.Random, world: dict, templates: tuple[str, ...], subject: str, other: str, town: str,
              fact=None) -> tuple[str, list]:
    slots = _Slots(rng, world, subject, other, town, fact)
    text = _cap(rng.choice(templates).format_map(slots))
    return text, slots.stated


def _least_stated(rng: random.Random, counts: dict, entity: str, relations: tuple[str, ...]) -> tuple[str, str]:
    keys = [(entity, rel) for rel in relations]
    low = min(counts[k] for k in keys)
    return rng.choice([k for k in keys if counts[k] == low])


def _passages(world: dict, n: int, words: int, seed: int) -> list[dict]:
    """``n`` passages of a book in story order: ``{"text", "_facts"}`` (the facts stated)."""
    lo, hi = max(MIN_WORDS, math.ceil(0.9 * words)), math.floor(1.1 * words)
    counts = {key: 0 for key in world["facts"]}
    out = []
    for index in range(n):
        rng = random.Random(f"soul-bench/copyright/{seed}/passage/{world['book']}/{index}")
        town = rng.choice(world["towns"])
        focal, second = rng.sample(world["cast"], 2)
        pending = [_least_stated(rng, counts, focal, _CHARACTER_RELATIONS),
                   _least_stated(rng, counts, second, _CHARACTER_RELATIONS)]
        text, stated = _sentence(rng, world, _OPENINGS, focal, second, town,
                                 _least_stated(rng, counts, town, _TOWN_RELATIONS))
        sentences, facts, total = [text], list(stated), len(text.split())
        dialogue_at, has_dialogue = rng.randrange(1, 3), False  # the sentence that is dialogue at the latest
        while total < lo or not has_dialogue:
            # Until there is dialogue, other sentences leave room for a short line of it (3-4 words);
            # it comes at sentence dialogue_at, or earlier when the passage is nearly full.
            dialogue = not has_dialogue and (len(sentences) >= dialogue_at or lo - total < 15)
            room = hi - total - (0 if has_dialogue or dialogue else 4)
            fact = pending[0] if pending and (rng.random() < 0.6 or lo - total < 30) else None
            for _ in range(30):
                if fact is not None:
                    subject = fact[0]
                    other = second if subject == focal else focal
                    kind = _SUBJECT_DIALOGUE if dialogue else _SUBJECT_SENTENCES
                    text, stated = _sentence(rng, world, kind, subject, other, town, fact)
                else:
                    subject = focal if rng.random() < 0.65 else second
                    other = second if subject == focal else focal
                    draw = rng.random()
                    kind = (_DIALOGUE if dialogue or draw < 0.2 else
                            _SUBJECT_SENTENCES if draw < 0.65 else _OTHER_SENTENCES)
                    text, stated = _sentence(rng, world, kind, subject, other, town)
                if len(text.split()) <= room:
                    break
            else:  # nothing fitted: a short sentence always does (room >= 4 for dialogue, else >= 5)
                if fact is not None:
                    pending.pop(0)  # this passage does not state it
                    continue
                while len(text.split()) > room:
                    kind = _DIALOGUE_FILLERS if dialogue else _FILLERS
                    text, stated = _sentence(rng, world, kind, focal, second, town)
            if fact is not None:
                pending.pop(0)
            sentences.append(text)
            facts += stated
            total += len(text.split())
            has_dialogue = has_dialogue or '"' in text
        for key in facts:
            counts[key] += 1
        out.append({"text": " ".join(sentences), "_facts": facts})
    return out


def _questions(world: dict, passages: list[dict], prefix: str, seed: int) -> list[dict]:
    """One question per distinct fact stated in ``passages``, at the first passage stating it."""
    rows, asked = [], set()
    for passage in passages:
        for key in passage["_facts"]:
            if key in asked:
                continue
            asked.add(key)
            entity, rel = key
            answer = world["facts"][key]
            rng = random.Random(f"soul-bench/copyright/{seed}/qa/{world['book']}/{entity}/{rel}")
            templates = list(FACT_RELATIONS[rel]["questions"])
            rng.shuffle(templates)
            question = next((q for t in templates if answer.lower() not in (q := t.format(n=entity)).lower()), None)
            if question is None or answer not in passage["text"]:
                raise RuntimeError(f"synthetic books: no valid question for {entity!r} / {rel!r}")
            rows.append({"id": f"{prefix}-qa-{len(rows):03d}", "question": question, "answer": answer,
                         "passage_id": passage["id"], "_entity": entity, "_relation": rel})
    return rows


def _generate(n_forget_passages: int = 40, n_holdout_passages: int = 40, n_retain_passages: int = 40,
              words_per_passage: int = 64, seed: int = 0) -> dict[str, list[dict]]:
    """generate_books, but rows keep their private ``_facts`` / ``_entity`` / ``_relation`` keys."""
    checks = (("n_forget_passages", n_forget_passages, 1), ("n_holdout_passages", n_holdout_passages, 0),
              ("n_retain_passages", n_retain_passages, 1), ("words_per_passage", words_per_passage, MIN_WORDS))
    for arg, value, low in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{arg} must be an integer >= {low}, got {value!r}")
    worlds = _build(seed)
    book_a = _passages(worlds["A"], n_forget_passages + n_holdout_passages, words_per_passage, seed)
    order = list(range(len(book_a)))
    random.Random(f"soul-bench/copyright/{seed}/split").shuffle(order)
    split = {"forget": sorted(order[:n_forget_passages]), "holdout": sorted(order[n_forget_passages:])}
    sets = {f"{name}_book": [{"id": f"{name}-{i:03d}", **book_a[j]} for i, j in enumerate(indices)]
            for name, indices in split.items()}
    book_b = _passages(worlds["B"], n_retain_passages, words_per_passage, seed)
    sets["retain_book"] = [{"id": f"retain-{i:03d}", **p} for i, p in enumerate(book_b)]
    sets["forget_qa"] = _questions(worlds["A"], sets["forget_book"], "forget", seed)
    sets["retain_qa"] = _questions(worlds["B"], sets["retain_book"], "retain", seed)
    return {name: sets[name] for name in BOOK_SETS}


# --------------------------------------------------------------------------- public API


def generate_books(n_forget_passages: int = 40, n_holdout_passages: int = 40, n_retain_passages: int = 40,
                   words_per_passage: int = 64, seed: int = 0) -> dict[str, list[dict]]:
    """Two synthetic books: ``{set: [record, ...]}`` for every name in :data:`BOOK_SETS`.

    Book rows are ``{"id", "text"}`` (``forget-000``, ``holdout-000``, ``retain-000``, in story
    order); question rows ``{"id", "question", "answer", "passage_id"}`` (``forget-qa-000``,
    ...), one per distinct fact stated in the set's passages, whose answer occurs verbatim in
    the passage ``passage_id`` of ``forget_book`` / ``retain_book``. Every passage has
    between ``max(40, ceil(0.9 * words_per_passage))`` and ``floor(1.1 * words_per_passage)``
    words. Deterministic in all arguments; raises ``ValueError`` for a count that is not an
    integer in range (``n_holdout_passages`` may be 0, ``words_per_passage >= 40``).
    """
    data = _generate(n_forget_passages, n_holdout_passages, n_retain_passages, words_per_passage, seed)
    return {name: [{k: v for k, v in row.items() if not k.startswith("_")} for row in rows]
            for name, rows in data.items()}


def write_local(folder, **kwargs) -> dict[str, Path]:
    """Write ``generate_books(**kwargs)`` in the local-folder layout the ``copyright`` task reads.

    ``forget.jsonl`` / ``holdout.jsonl`` / ``retain.jsonl`` (one passage a line, rows with
    ``id`` and ``text``) and ``forget_qa.jsonl`` / ``retain_qa.jsonl`` (the question rows).
    Returns ``{name: path}`` with the file names without ``.jsonl`` as names.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files = {"forget": "forget_book", "holdout": "holdout_book", "retain": "retain_book",
             "forget_qa": "forget_qa", "retain_qa": "retain_qa"}
    data = generate_books(**kwargs)
    paths = {}
    for name, set_name in files.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in data[set_name]), encoding="utf-8")
    return paths
