from scorelab.cli import console

console()
