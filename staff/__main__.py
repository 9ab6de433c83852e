"""``python -m staff``: the clinicbot command (``... web``: the staff page)."""

import signal
import sys

from staff.cli import main

# `clinicbot faq list | head` ends quietly, as shell tools do.
signal.signal(signal.SIGPIPE, signal.SIG_DFL)
if sys.argv[1:2] == ["web"]:
    from staff.web import main as web_main

    sys.exit(web_main(sys.argv[2:]))
sys.exit(main())
