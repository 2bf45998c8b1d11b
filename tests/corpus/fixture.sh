#!/bin/sh
# The corpus's fixture: made natively, once, in an empty directory (the current one);
# every run of a command starts from a fresh copy of it (cp -a: modes, times, links).
# Everything here is deterministic: fixed contents, fixed times, fixed git dates.
set -eu
printf 'pear\napple\nfig\napple\nkiwi\n' > a.txt
printf 'pear\nplum\nfig\ngrape\nkiwi\n' > b.txt
seq 1 5000 > n.txt
awk 'BEGIN { for (i = 0; i < 4000; i++) printf "%08x word%d\n", (i * 2654435761) % 4294967296, i % 97 }' > words.txt
printf 'root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\nbin:x:2:2:bin:/bin:/usr/sbin/nologin\n' > passwd.txt
printf '1 one\n2 two\n3 three\n' > j1.txt
printf '1 uno\n3 tres\n4 cuatro\n' > j2.txt
printf 'name size\nalpha 10\nbeta 200\ngamma 3\n' > table.txt
printf 'a\tb\tc\n' > tabs.txt
printf 'caf\303\251 na\303\257ve\n' > utf8.txt
printf 'scale=20\n4*a(1)\n2^64\n' > pi.bc
printf '{"name": "corpus", "items": [3, 1, 2], "nested": {"k": true}}\n' > data.json
printf 'a b\nb c\nc d\n' > pairs.txt
printf 'import sys\nprint(sum(int(line) for line in open(sys.argv[1])))\n' > sum.py
# asyncio waits for a child through a pidfd since Python 3.12 (trixie), a thread before
printf 'import asyncio\nasync def main():\n    child = await asyncio.create_subprocess_exec("/bin/sh", "-c", "echo child; exit 3")\n    print(await child.wait())\nasyncio.run(main())\n' > child.py
printf 'all:\n\t$(info made $@)\n\t@:\n' > info.mk
printf 'a.txt\nb.txt\n' > list.txt
# sort sorts an input of this size in threads, one per CPU (up to 8)
awk 'BEGIN { for (i = 0; i < 300000; i++) print (i * 7919) % 300007 }' > large.txt
# three threads take turns at the next item, each writing the one it took
printf 'import sys, threading\nlock = threading.Lock()\nitems = iter(range(300))\ndef work():\n    while True:\n        with lock:\n            item = next(items, None)\n            if item is None:\n                return\n            print("item", item, flush=True)\n        sum(range(2000))\nthreads = [threading.Thread(target=work) for _ in range(3)]\nfor thread in threads:\n    thread.start()\nfor thread in threads:\n    thread.join()\n' > turns.py

mkdir -p tree/sub/deeper tmp www
printf 'needle in a\n' > tree/one.txt
printf 'no match\n' > tree/two.txt
printf 'a needle deeper\n' > tree/sub/deeper/three.txt
printf 'binary\0needle\n' > tree/sub/bin.dat
ln -s one.txt tree/link-to-one
ln tree/two.txt tree/sub/hard-two
cp -a tree tree2
printf 'changed\n' > tree2/two.txt

sort a.txt > sorted-a.txt
sort b.txt > sorted-b.txt
cp a.txt patched.txt
cp a.txt sedme.txt
diff -u a.txt b.txt > ab.diff || true
printf '<html><body>corpus page</body></html>\n' > www/index.html
seq 1 300 > www/numbers.txt

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1700000000 -cf tree.tar tree
gzip -9 -n -c a.txt > a.txt.gz
bzip2 -c a.txt > a.txt.bz2
xz -c a.txt > a.txt.xz
zstd -q -c a.txt > a.txt.zst
gzip -n -c tree.tar > tree.tar.gz
sha512sum a.txt n.txt > sums.sha512
zip -q -X fixture.zip a.txt b.txt tree/one.txt
sqlite3 fixture.db 'create table fruit(name text, n integer); insert into fruit values ("pear", 3), ("fig", 7), ("kiwi", 1);'

export GIT_CONFIG_NOSYSTEM=1 GIT_AUTHOR_NAME=corpus GIT_AUTHOR_EMAIL=corpus@example.org \
    GIT_COMMITTER_NAME=corpus GIT_COMMITTER_EMAIL=corpus@example.org \
    GIT_AUTHOR_DATE='@1700000000 +0000' GIT_COMMITTER_DATE='@1700000000 +0000'
git init -q -b main repo
cp a.txt repo/a.txt
git -C repo add a.txt
git -C repo commit -q -m 'first'
cp b.txt repo/a.txt

find . -exec touch -h -d @1700000000 {} +
