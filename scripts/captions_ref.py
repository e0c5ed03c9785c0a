"""Expected caption metrics for bins/tests/veval_captions.rs, from pycocoevalcap 1.2 itself.

    python scripts/captions_ref.py --out DIR

Writes to DIR:
  pred.jsonl     candidate captions, {"video", "caption"} per line (as vcaption writes them)
  gt.json        references, {video: [captions]}
  tokens.json    [[caption, tokenized], ...]: the tricky-caption corpus through pycocoevalcap's
                 PTBTokenizer (the Stanford jar, -preserveLines -lowerCase, punctuation removed)
  expected.json  {"corpus": {Bleu_1.., METEOR, ROUGE_L, CIDEr}, "per_video": {video: {...}},
                 "meteor_jar": path}: COCOEvalCap.evaluate's scorers on the tokenized captions,
                 the videos in pred.jsonl's order (the order of the reference's dicts)

Needs the captions peers venv (scripts/peers.sh TARGET captions) and a JRE.
"""
import argparse
import json
import os
import random

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer
import pycocoevalcap.meteor.meteor as meteor_module

# Captions that exercise the tokenizer's rules: contractions, hyphens, quotes, periods,
# numbers, parentheses, abbreviations, symbols.
TRICKY = [
    "A man doesn't play the guitar.",
    "It's a dog's toy; they're \"happy\" (really).",
    "The colour of the theatre is grey, isn't it?",
    "A well-known man -- running -- fast... and U.S. flags at 3.5 mph, 1,000 people $5 50% cats & dogs.",
    "Mr. Smith and St. Louis vs. Dr. Who at 5 p.m. etc.",
    "I can't, won't, cannot; gonna wanna gotta lemme gimme 'tis 'twas.",
    "He said 'hello' and `quote' {braces} [brackets] a/b a*b #1 @user e-mail http://x.com",
    "\u201cSmart quotes\u201d \u2018single\u2019 \u2014 em-dash \u2026 ellipsis \u00bd half",
    "The boys' toys. O'Neil rock'n'roll y'all ma'am",
    "A MAN IS RUNNING. 2nd 10:30 3/4 cup 3x speed 1990s '90s",
    "a man holds the letter a.",
    "plan b. then",
    "A man is in the U.S. He runs.",
    "she's 5'10\" tall and it's 3 o'clock",
    "the 1990's were fun, weren't they? y'know",
    "rock-n-roll e.g. i.e. a.m. approx. 5 no. 5 fig. 3 inc. co. corp. jr. mt. ft. ave.",
    "man's, men's; James' book",
    "he's done.he goes",
    "20-year-old 3-d 10-15 minutes 2:30pm 5kg 12.5% -5 +3 #hashtag @name x-ray",
    "\"I'm fine,\" she said. 'Yes.' ''quoted'' ``latex''",
    "a_b c__d e=mc2 a+b 1/2 50/50 and/or w/ a&b AT&T",
    "'em 'til 'cause 'n 'round ol' somethin' wanna gotta gimme lemme gonna cannot",
    "the man jumps!!! what?! wow!? ok... hmm.... so.. no..",
    "a      man   \ttab",
    "Dog.Cat",
    "",
    "   ",
    "A woman is slicing an onion.",
    "Two men are playing ping-pong; one wins.",
    "A girl (age 5) is singing: 'la la la'.",
    "The cat is on the mat -- again!",
    "A group of people are dancing at a party...",
    "Someone's pouring water into a glass.",
    "They'll be here soon, won't they?",
    "We've got 2 dogs & 3 cats.",
    "The chef adds 1 1/2 cups of flour.",
    "He ran 100m in 9.58 seconds!",
    "A video game -- Mario Kart -- is shown.",
    "The man said, \"Don't do it.\"",
    "A baby laughs at a dog (it's cute).",
    "People are walking down the street in New York.",
    "Jan. 5 is a Mon. in the state of Calif. or Ind. etc. and Mass. too.",
    "He does ten reps. A boy named alex. Gen. Lee and Col. Sanders.",
    "A person's hands are shown cutting a tomato.",
    "The U.K. and the E.U. met in Washington D.C. yesterday.",
    "Kids play in the yard--then they eat.",
    "A man is---maybe---sleeping.",
    "Is this a question?? Yes!!",
    "A woman's  voice   echoes.",
    "Dr.Seuss wrote it.",
    "He's 6'2\" and weighs 200lbs.",
    "The score is 3-2 at half-time.",
    "It costs \u00a35 or \u20ac10 or \u00a5100.",
    "An email to john@example.com was sent.",
    "The temperature is 30\u00b0C today.",
    "A cat; a dog: a bird, a fish.",
]

VOCAB = ("a man woman dog cat is are playing running on the in with guitar ball street kitchen "
         "cooking talking about to of and two people group child car red blue small big").split()


def sentence(rng, n):
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    rng = random.Random(0)

    # Tokenizer corpus: the tricky captions as one "video" each, as pycocoevalcap feeds them.
    tok_in = {i: [{"caption": c}] for i, c in enumerate(TRICKY)}
    tok_out = PTBTokenizer().tokenize(tok_in)
    tokens = [[c, tok_out[i][0]] for i, c in enumerate(TRICKY)]

    # Metric corpus: 150 videos (more than numpy's 128-value block) of random captions with
    # 1-5 references each, some of them tricky captions, one reference empty.
    preds, gts = [], {}
    for v in range(150):
        vid = f"v_{v:04d}"
        cand = sentence(rng, rng.randint(3, 12))
        if v % 10 == 3:
            cand = TRICKY[v % len(TRICKY)] or "nothing here."
        refs = [sentence(rng, rng.randint(3, 14)) for _ in range(rng.randint(1, 5))]
        if v % 7 == 0:
            refs.append(cand.upper() + ".")
        if v % 11 == 5:
            refs.append(TRICKY[(v * 3) % len(TRICKY)] or "a man.")
        if v == 42:
            refs.append("")
        preds.append({"video": vid, "caption": cand})
        gts[vid] = refs

    gts_in = {p["video"]: [{"caption": r} for r in gts[p["video"]]] for p in preds}
    res_in = {p["video"]: [{"caption": p["caption"]}] for p in preds}
    tok = PTBTokenizer()
    gts_t = tok.tokenize(gts_in)
    res_t = tok.tokenize(res_in)

    corpus, per_video = {}, {p["video"]: {} for p in preds}
    for scorer, names in [(Bleu(4), ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4"]), (Meteor(), "METEOR"),
                          (Rouge(), "ROUGE_L"), (Cider(), "CIDEr")]:
        score, scores = scorer.compute_score(gts_t, res_t) if not isinstance(scorer, Bleu) \
            else scorer.compute_score(gts_t, res_t, verbose=0)
        if isinstance(names, list):
            for sc, scs, m in zip(score, scores, names):
                corpus[m] = float(sc)
                for vid, s in zip(gts_t.keys(), scs):
                    per_video[vid][m] = float(s)
        else:
            corpus[names] = float(score)
            for vid, s in zip(gts_t.keys(), scores):
                per_video[vid][names] = float(s)

    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "pred.jsonl"), "w") as f:
        for p in preds:
            f.write(json.dumps(p) + "\n")
    with open(os.path.join(args.out, "gt.json"), "w") as f:
        json.dump(gts, f)
    with open(os.path.join(args.out, "tokens.json"), "w") as f:
        json.dump(tokens, f, ensure_ascii=False)
    jar = os.path.join(os.path.dirname(os.path.abspath(meteor_module.__file__)), "meteor-1.5.jar")
    with open(os.path.join(args.out, "expected.json"), "w") as f:
        json.dump({"corpus": corpus, "per_video": per_video, "meteor_jar": jar}, f)


if __name__ == "__main__":
    main()
