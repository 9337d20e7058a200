"""A built-in corpus of simple children's stories, so the default run needs no download.

Stories are drawn from a small grammar (characters, places, objects, feelings and six plot
shapes, each with several wordings), seeded, so the same seed always gives the same text.
The layout matches TinyStories: each story is followed by "\\n<|endoftext|>\\n". A small
model learns the structure quickly (names and pronouns that stay consistent, dialogue,
plots that resolve), which makes a falling validation loss visible in minutes.
"""

import math
import os
import random
from dataclasses import dataclass

from cs336_basics.fileio import atomic_write

END_OF_TEXT = "<|endoftext|>"


@dataclass(frozen=True)
class Character:
    name: str
    kind: str
    subj: str  # she / he
    obj: str  # her / him
    poss: str  # her / his


GIRLS = ["Lily", "Mia", "Sara", "Emma", "Anna", "Lucy", "Zoe", "Ella", "Amy", "Rose", "Kate", "Sue"]
BOYS = ["Tom", "Ben", "Max", "Sam", "Leo", "Jack", "Tim", "Finn", "Joe", "Noah", "Dan", "Bob"]
ANIMALS = [
    "dog",
    "cat",
    "bunny",
    "bear",
    "bird",
    "duck",
    "frog",
    "fox",
    "mouse",
    "pig",
    "lamb",
    "owl",
]
ADJECTIVES = [
    "little",
    "kind",
    "happy",
    "brave",
    "curious",
    "shy",
    "funny",
    "small",
    "clever",
    "gentle",
]
PLACES = [
    "park",
    "garden",
    "forest",
    "woods",
    "field",
    "yard",
    "meadow",
    "orchard",
    "backyard",
    "playground",
]
OBJECTS = [
    "ball",
    "kite",
    "red hat",
    "toy car",
    "blue book",
    "shiny shell",
    "teddy bear",
    "little boat",
    "yellow balloon",
    "drum",
    "doll",
    "green cup",
]
HIDING = [
    "under a big rock",
    "behind a tree",
    "in a pile of leaves",
    "next to the fence",
    "under the bench",
    "in the tall grass",
    "inside an old box",
    "near the water",
]
LOOK_SPOTS = [
    "the bed",
    "the table",
    "a bush",
    "the slide",
    "a log",
    "the swing",
    "a flower pot",
    "the door",
]
ACTIVITIES = {  # activity -> (the scary part, how it ends)
    "climb the big tree": (
        "the branches were very high",
        "sat on the top branch and saw the whole town",
    ),
    "swim in the lake": ("the water looked deep and cold", "swam all the way to the little dock"),
    "ride a bike": ("the bike wobbled and went fast", "rode around the park three times"),
    "jump into the pool": ("the pool looked very big", "jumped in with a big splash"),
    "sing in the show": ("many people were watching", "sang the whole song and everyone clapped"),
    "go down the tall slide": ("the slide was so tall", "went down fast and laughed all the way"),
}
FOODS = ["cake", "cookies", "bread", "pie", "soup", "pancakes"]
INGREDIENTS = ["flour", "sugar", "eggs", "milk", "butter", "apples", "berries", "honey"]
FINDS = {  # a thing found -> what was inside or what it became
    "a small box": "a tiny gold key",
    "a round egg": "a baby bird that said peep",
    "a little door in a tree": "a room full of sleeping bugs",
    "a bottle with a note": "a map that showed the way to a big tree",
    "a bag": "many colorful marbles",
}
HAPPY = ["happy", "glad", "excited", "proud", "joyful"]
SAD = ["sad", "upset", "worried", "unhappy"]
GROWNUPS = ["mom", "dad", "grandma", "grandpa"]
MORALS = [
    "It is good to help your friends.",
    "Sharing makes everyone happy.",
    "Being brave means trying even when you are scared.",
    "Friends make every day better.",
    "It is fun to try new things.",
    "Kindness always comes back to you.",
]


def _character(rng: random.Random, avoid: str = "") -> Character:
    while True:
        kind = rng.choices(("girl", "boy", "animal"), weights=(35, 35, 30))[0]
        if kind == "girl":
            c = Character(rng.choice(GIRLS), "girl", "she", "her", "her")
        elif kind == "boy":
            c = Character(rng.choice(BOYS), "boy", "he", "him", "his")
        else:
            she = rng.choice((True, False))
            name = rng.choice(GIRLS if she else BOYS)
            c = Character(
                name, rng.choice(ANIMALS), *(("she", "her", "her") if she else ("he", "him", "his"))
            )
        if c.name != avoid:
            return c


def _called(c: Character) -> str:
    return c.name if c.kind in ("girl", "boy") else f"{c.name} the {c.kind}"


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _opening(rng: random.Random, c: Character, place: str) -> str:
    adj = rng.choice(ADJECTIVES)
    return rng.choice(
        [
            f"Once upon a time, there was a {adj} {c.kind} named {c.name}.",
            f"There was once a {adj} {c.kind} called {c.name}. {_cap(c.subj)} lived near the {place}.",
            f"{c.name} was a {adj} {c.kind}. {_cap(c.subj)} liked to play in the {place} every day.",
            f"One sunny morning, a {adj} {c.kind} named {c.name} went to the {place}.",
        ]
    )


def _lost_and_found(rng: random.Random, c: Character, f: Character, place: str) -> list[str]:
    obj, spot1, spot2 = rng.choice(OBJECTS), *rng.sample(LOOK_SPOTS, 2)
    return [
        f"{c.name} had a {obj}. {_cap(c.subj)} loved {c.poss} {obj} very much.",
        f"One day, {c.name} was playing with the {obj} in the {place}, and then it was gone!",
        f"{c.name} felt {rng.choice(SAD)}. {_cap(c.subj)} looked under {spot1} and behind {spot2}, "
        f"but {c.subj} could not find it.",
        f'Then {c.poss} friend {_called(f)} came by. "Why are you sad, {c.name}?" asked {f.name}.',
        f'"I lost my {obj}," said {c.name}. "I will help you look," said {f.name}.',
        f"They looked and looked. At last, {f.name} found the {obj} {rng.choice(HIDING)}.",
        f'{c.name} was so {rng.choice(HAPPY)}. "Thank you, {f.name}!" {c.subj} said, and {c.subj} gave '
        f"{f.name} a big hug.",
    ]


def _brave(rng: random.Random, c: Character, f: Character, place: str) -> list[str]:
    activity, (scary, ending) = rng.choice(list(ACTIVITIES.items()))
    helper = rng.choice(GROWNUPS + [f.name])
    helper_text = f"{c.poss} {helper}" if helper in GROWNUPS else helper
    return [
        f"{c.name} wanted to {activity}. But {scary}, and {c.name} was scared.",
        f'"I can\'t do it," {c.name} said. {_cap(helper_text)} smiled and said, "You can do it. '
        f'I will be right here."',
        f"{c.name} took a deep breath. {_cap(c.subj)} tried once, and then {c.subj} tried again.",
        f"At last, {c.name} {ending}!",
        f'{c.name} felt very {rng.choice(["proud", "brave", "happy"])}. "I did it!" {c.subj} shouted.',
    ]


def _sharing(rng: random.Random, c: Character, f: Character, place: str) -> list[str]:
    obj = rng.choice(OBJECTS)
    return [
        f"{c.name} got a new {obj}. {_cap(c.subj)} took it to the {place} to play.",
        f'{f.name} saw the {obj} and said, "Can I play with it too?"',
        f'"No, it is mine," said {c.name}. {f.name} felt {rng.choice(SAD)} and walked away.',
        f"Soon {c.name} was alone. Playing alone was not much fun.",
        f'{c.name} ran to {f.name} and said, "I am sorry. Let\'s play with my {obj} together."',
        f"{f.name} smiled. They played with the {obj} all day and had lots of fun.",
    ]


def _rain(rng: random.Random, c: Character, f: Character, place: str) -> list[str]:
    return [
        f"One day, {c.name} and {f.name} went to the {place}. The sun was warm and the sky was blue.",
        f"They ran and jumped and played {rng.choice(['tag', 'ball', 'hide and seek', 'with a kite'])}.",
        "Suddenly, big dark clouds came, and it began to rain.",
        f'"Quick, let\'s hide!" said {f.name}. They ran under a big tree and waited.',
        f"{c.name} was a little {rng.choice(['cold', 'scared', 'wet'])}, but {f.name} held {c.poss} hand.",
        "Soon the rain stopped, and a big rainbow came out. "
        f'"Look, it is so pretty!" said {c.name}. They laughed and went home together.',
    ]


def _baking(rng: random.Random, c: Character, f: Character, place: str) -> list[str]:
    food, grownup = rng.choice(FOODS), rng.choice(GROWNUPS)
    a, b, d = rng.sample(INGREDIENTS, 3)
    return [
        f"One day, {c.name} wanted to make {food} with {c.poss} {grownup}.",
        f"They got {a}, {b} and {d}. {c.name} mixed everything in a big bowl.",
        f"Oops! Some {a} fell on the floor, and {c.name} had {a} on {c.poss} nose.",
        f'{_cap(c.poss)} {grownup} laughed and said, "That is okay. Cooking can be messy."',
        f"They put the {food} in the oven and waited. Soon the house smelled very good.",
        f'{c.name} shared the {food} with {f.name}. "This is yummy!" said {f.name}.',
    ]


def _discovery(rng: random.Random, c: Character, f: Character, place: str) -> list[str]:
    thing, inside = rng.choice(list(FINDS.items()))
    return [
        f"One day, {c.name} was walking in the {place} when {c.subj} saw {thing}.",
        f'{c.name} was very curious. "What is this?" {c.subj} asked.',
        f"{_cap(c.subj)} called {f.name}, and they looked at it together.",
        f"Slowly, they opened it. Inside, they found {inside}!",
        f'"Wow!" said {f.name}. {c.name} and {f.name} smiled at each other.',
        f"They ran home to tell everyone about what they found in the {place}.",
    ]


PLOTS = [_lost_and_found, _brave, _sharing, _rain, _baking, _discovery]


def story(rng: random.Random) -> str:
    """One story: an opening, a plot, and sometimes a closing line and a moral."""
    hero = _character(rng)
    friend = _character(rng, avoid=hero.name)
    place = rng.choice(PLACES)
    sentences = [_opening(rng, hero, place)] + rng.choice(PLOTS)(rng, hero, friend, place)
    if rng.choice((True, False)):
        sentences.append(
            rng.choice(
                [
                    f"From that day on, {hero.name} and {friend.name} were best friends.",
                    f"That night, {hero.name} went to bed with a big smile.",
                    "It was the best day ever.",
                ]
            )
        )
    if rng.choices((True, False), weights=(3, 7))[0]:
        sentences.append(rng.choice(MORALS))
    paragraphs, i = [], 0
    while i < len(sentences):  # two or three sentences per paragraph, like TinyStories
        n = rng.choice((2, 3))
        paragraphs.append(" ".join(sentences[i : i + n]))
        i += n
    return "\n\n".join(paragraphs)


def generate_corpus(num_bytes: int, seed: int = 0, rng: random.Random | None = None) -> str:
    """About `num_bytes` of UTF-8 text: whole stories, each followed by "\\n<|endoftext|>\\n"
    (from `rng` when given, else a Random seeded by `seed`)."""
    rng = random.Random(seed) if rng is None else rng
    parts, size = [], 0
    while size < num_bytes:
        parts.append(story(rng) + f"\n{END_OF_TEXT}\n")
        size += len(parts[-1])  # ASCII only, so characters = bytes
    return "".join(parts)


class InformationMeter(random.Random):
    """A Random that adds up the information of the choices it makes, -log p in nats: with
    every random decision of the grammar going through choice, choices or sample, the
    information of a generated text, an upper bound on what any model must pay for it (the
    same text reached two ways, or a redrawn character, counts twice)."""

    nats = 0.0

    def choice(self, seq):
        self.nats += math.log(len(seq))
        return super().choice(seq)

    def choices(self, population, weights=None, *, cum_weights=None, k=1):
        picked = super().choices(population, weights, cum_weights=cum_weights, k=k)
        weights = weights or [1] * len(population)
        total = sum(weights)
        self.nats -= sum(math.log(weights[population.index(x)] / total) for x in picked)
        return picked

    def sample(self, population, k, *, counts=None):
        self.nats += math.log(math.perm(len(population), k))
        return super().sample(population, k, counts=counts)


def information(num_bytes: int, seed: int = 0) -> tuple[str, float]:
    """`generate_corpus(num_bytes, seed)` and the information its random choices carry (nats):
    divided by the text's token count, an upper bound on the loss floor of a model trained on
    such text (no model needs to pay more; the text's entropy may be less)."""
    rng = InformationMeter(seed)
    return generate_corpus(num_bytes, seed, rng), rng.nats


def write_corpus(path: str | os.PathLike, num_bytes: int, seed: int = 0) -> None:
    """Write `generate_corpus(num_bytes, seed)` to `path` atomically."""
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(generate_corpus(num_bytes, seed))
