#!/bin/bash
cd /work/main && . /work/venv/bin/activate
taskset -c 1 python3 -c "while True: pass" &
BUSY=$!
sleep 1
for i in 1 2 3; do
  rm -rf /tmp/tour$i && mkdir /tmp/tour$i && cd /tmp/tour$i
  SPARSEKERN_CACHE=/tmp/tour$i/cache PYTHONPATH=/work/main python -c "
import re, pathlib, logging
logging.basicConfig(level=logging.INFO, format='%(message)s')
t = pathlib.Path('/work/main/README.md').read_text().split('## API tour', 1)[1]
code = re.search(r'\`\`\`python\n(.*?)\`\`\`', t, re.S).group(1)
exec(compile(code, 'tour', 'exec'), {})
" 2>&1 | grep -E "sparsify|unstable|predicted" | cut -c1-400 | sed "s/^/tour $i: /"
done
kill $BUSY
