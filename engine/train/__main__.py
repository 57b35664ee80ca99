import sys

from engine.train.recipe import main

sys.exit(main(sys.argv[1:]))
