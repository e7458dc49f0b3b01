import sys

from livecam.main import main

sys.exit(main())
