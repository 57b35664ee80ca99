import sys

from engine.train.command import main

sys.exit(main(sys.argv[1:]))
