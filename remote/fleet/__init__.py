"""The fleet page (`invoke fleet`): every host on one live page in the operator's browser."""
