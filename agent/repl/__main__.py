"""``python -m mathagent.agent.repl``: the REPL without the ``mathagent solve`` dispatcher."""

import sys

from mathagent.agent.repl import main

sys.exit(main())
