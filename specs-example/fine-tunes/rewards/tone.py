"""A reward for support replies: polite, and pointing the customer somewhere concrete.

tuneops calls `score(prompts, completions, **columns)` with the tickets, the generated replies and
the dataset's other columns (here `reference`), and expects one number per reply. It runs inside
the training job; its bytes are part of the FineTune's fingerprint, so editing it retrains.
"""

APOLOGIES = ("sorry", "apologies", "apologize")
POINTERS = ("settings", "app", "support page", "manual")


def score(prompts, completions, **columns):
    scores = []
    for reply in completions:
        text = reply.lower()
        polite = any(word in text for word in APOLOGIES)
        concrete = any(word in text for word in POINTERS)
        rude = "turning it off and on" in text
        scores.append(0.5 * polite + 0.5 * concrete - 1.0 * rude)
    return scores
