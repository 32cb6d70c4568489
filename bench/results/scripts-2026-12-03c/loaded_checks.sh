#!/bin/bash
# README tour x5 and the demo once, each with one busy process pinned to CPU 1.
cd /work/main && . /work/venv/bin/activate
taskset -c 1 python3 -c "while True: pass" &
BUSY=$!
sleep 1
for i in 1 2 3 4 5; do
  rm -rf /tmp/tour$i && mkdir /tmp/tour$i && cd /tmp/tour$i
  SPARSEKERN_CACHE=/tmp/tour$i/cache PYTHONPATH=/work/main python -c "
import re, pathlib
t = pathlib.Path('/work/main/README.md').read_text().split('## API tour', 1)[1]
code = re.search(r'\`\`\`python\n(.*?)\`\`\`', t, re.S).group(1)
exec(compile(code, 'tour', 'exec'), {})
" 2>&1 | tail -1 | sed "s/^/tour $i: /"
done
cd /tmp && rm -rf demo-loaded && mkdir demo-loaded && cd demo-loaded
PYTHONPATH=/work/main python -m sparsekern demo > demo.log 2>&1; echo "demo rc=$?"
grep -E "machine|\[OK|\[FAIL|speedup at|too busy|time:" demo.log
kill $BUSY
