import sys

from utils.gpu_check.cli import main

sys.exit(main())
