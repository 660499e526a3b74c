"""Generate the bundled demo data (written by the Verticore project; no third-party content).

``items.csv``: 240 fictional films (8 genres x 30) with a title, year, genre, a one-sentence
description and tags. ``interactions.csv``: 80 synthetic users, each with one or two favourite
genres, rating mostly films of those genres over a few months. Deterministic (seed 7)::

    python apps/recommender/samples/make_samples.py
"""
from __future__ import annotations

import csv
import io
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent

GENRES = {
    "Horror": (["Haunted", "Crimson", "Silent", "Hollow", "Midnight", "Rotting"], ["Manor", "Asylum", "Forest", "Cellar", "Doll", "Harvest"],
               ["a family moves into a house where something waits in the walls", "campers are hunted by a masked killer",
                "a cursed doll brings nightmares to a small town", "a priest faces a demon that possesses a child",
                "zombies rise from the cemetery after a storm", "a vampire stalks the students of an old boarding school"],
               ["scary", "ghosts", "gore", "supernatural", "jump scares", "vampires", "zombies"]),
    "Animation": (["Little", "Brave", "Happy", "Tiny", "Magic", "Fluffy"], ["Bunny", "Dragon", "Robot", "Penguin", "Kitten", "Balloon"],
                  ["a cheerful cartoon rabbit sets out to find the lost carrot festival", "talking animals build a treehouse together",
                   "a small robot learns to paint with its new friends", "a family of penguins goes on a musical adventure",
                   "a young dragon who cannot breathe fire saves the village anyway", "colourful toys come alive when the children sleep"],
                  ["cartoon", "kids", "family", "cute", "animated", "musical", "talking animals"]),
    "Sci-Fi": (["Quantum", "Stellar", "Orbital", "Neon", "Final", "Dark"], ["Frontier", "Colony", "Signal", "Protocol", "Horizon", "Drift"],
               ["astronauts on a failing space station receive a signal from deep space", "an android questions its programming in a neon city",
                "time travellers try to stop a war before it starts", "colonists on a distant planet discover they are not alone",
                "a hacker uncovers a conspiracy inside a virtual world", "a crew wakes from cryosleep far from their destination"],
               ["space", "robots", "time travel", "aliens", "cyberpunk", "future", "dystopia"]),
    "Romance": (["Summer", "Paris", "Secret", "Second", "Autumn", "Endless"], ["Letters", "Kiss", "Promise", "Wedding", "Café", "Dance"],
                ["two strangers fall in love during a summer in Paris", "old letters reunite a couple after twenty years",
                 "a wedding planner falls for the groom's brother", "a baker and a food critic slowly fall in love",
                 "childhood friends discover their feelings at a village dance", "a love story told across three generations"],
                ["love", "romantic", "heartwarming", "wedding", "relationships", "feel-good", "drama"]),
    "Documentary": (["Deep", "Hidden", "Wild", "Frozen", "Inside", "Lost"], ["Oceans", "Markets", "Planet", "Kingdoms", "Economy", "Rainforest"],
                    ["a nature documentary following whales across the deep ocean", "how the 2008 financial crisis unfolded inside the banks",
                     "a year with wolves in the frozen north", "the hidden economics of the global coffee trade",
                     "scientists race to understand the melting glaciers", "the history of ancient civilisations told through their ruins"],
                    ["nature", "history", "science", "finance", "true story", "wildlife", "educational"]),
    "Thriller": (["Cold", "Double", "Last", "Broken", "Silent", "Twelve"], ["Witness", "Agent", "Heist", "Alibi", "Conspiracy", "Hours"],
                 ["a detective hunts a serial killer through a rainy city", "a bank heist goes wrong when the vault is empty",
                  "a spy must expose a traitor inside the agency", "a witness to a murder goes into hiding",
                  "a kidnapping case unravels a political conspiracy", "a lawyer discovers her client is guilty"],
                 ["suspense", "crime", "mystery", "twist ending", "spy", "detective", "dark"]),
    "Comedy": (["Crazy", "Awkward", "Big", "Totally", "Accidental", "Weekend"], ["Roommates", "Road Trip", "Office", "Reunion", "Vacation", "Neighbours"],
               ["two clumsy friends take a road trip that goes hilariously wrong", "an awkward office party spirals out of control",
                "a family reunion becomes a disaster of misunderstandings", "roommates compete to win a reality show",
                "a wedding speech goes terribly and wonderfully wrong", "neighbours start a prank war that takes over the street"],
               ["funny", "slapstick", "feel-good", "parody", "witty", "silly", "buddy comedy"]),
    "Fantasy": (["Enchanted", "Shadow", "Golden", "Elven", "Ancient", "Storm"], ["Kingdom", "Sword", "Crown", "Quest", "Sorcerer", "Realm"],
                ["a young farmer discovers she is heir to a magic kingdom", "knights and a wizard journey to destroy an ancient sword",
                 "an elf and a dwarf must work together to save their realm", "a sorcerer's apprentice unleashes a storm of spells",
                 "dragons return to a land that forgot magic", "a thief steals a crown that grants wishes"],
                ["magic", "dragons", "epic", "quest", "wizards", "medieval", "adventure"]),
}


def make(seed: int = 7) -> tuple[str, str]:
    rng = random.Random(seed)
    items = []
    n = 0
    for genre, (adjs, nouns, plots, tags) in GENRES.items():
        combos = [(a, b) for a in adjs for b in nouns]
        rng.shuffle(combos)
        for a, b in combos[:30]:
            n += 1
            plot = rng.choice(plots)
            items.append({"item_id": f"m{n:03d}", "title": f"The {a} {b}", "year": rng.randint(1975, 2024), "genre": genre,
                          "description": plot[0].upper() + plot[1:] + ".", "tags": "|".join(rng.sample(tags, 3))})
    by_genre: dict[str, list[str]] = {}
    for it in items:
        by_genre.setdefault(it["genre"], []).append(it["item_id"])
    genres = list(GENRES)
    rows = []
    t0 = 1_700_000_000
    for u in range(1, 81):
        favs = rng.sample(genres, 2 if rng.random() < 0.5 else 1)
        n_items = rng.randint(8, 20)
        picked: list[str] = []
        t = t0 + rng.randint(0, 30) * 86400
        while len(picked) < n_items:
            g = rng.choice(favs) if rng.random() < 0.85 else rng.choice(genres)
            cand = rng.choice(by_genre[g])
            if cand in picked:
                continue
            picked.append(cand)
            t += rng.randint(1, 5) * 86400 + rng.randint(0, 86399)
            rating = rng.choice([4, 4.5, 5, 5]) if g in favs else rng.choice([2, 3, 3.5])
            rows.append({"user_id": f"user{u:02d}", "item_id": cand, "rating": rating, "timestamp": t})
    def to_csv(rows: list[dict]) -> str:
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()
    return to_csv(items), to_csv(rows)


if __name__ == "__main__":
    items_csv, inter_csv = make()
    (HERE / "items.csv").write_text(items_csv, encoding="utf-8")
    (HERE / "interactions.csv").write_text(inter_csv, encoding="utf-8")
    print("wrote items.csv and interactions.csv")
