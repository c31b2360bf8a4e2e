#!/usr/bin/env python3
"""Train the byte-level BPE tokenizer (GPT-2 split regex, no prefix space) on train.txt.

Writes tokenizer.json to --out. "<|endoftext|>" is id 0 (a special/control token,
used as document separator, BOS and EOS).
"""
import argparse

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

EOT = "<|endoftext|>"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", default="/work/train-work/data/train.txt")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--out", default="/work/train-work/data/tokenizer.json")
    args = ap.parse_args()

    tok = Tokenizer(models.BPE())
    # use_regex=True: the GPT-2 split regex; add_prefix_space=False: text is not altered.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([args.train], trainer)
    tok.save(args.out)
    print(f"vocab={tok.get_vocab_size()} eot_id={tok.token_to_id(EOT)} -> {args.out}")


if __name__ == "__main__":
    main()
