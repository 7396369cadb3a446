"""The 8x8 digits set of python3-sklearn as .npy train/test splits (python/make_digits.py),
for the `nnx train` tests: OUT/digits/digits_{train,test}_{x,y}.npy."""
from make_digits import write_digits


def generate(folder):
    write_digits(folder)
