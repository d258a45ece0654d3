# Builder of the benchmark closure's store paths (run by /bin/sh, sandbox
# off, PATH=/usr/bin:/bin). It copies real files from this machine, so the
# closure compresses like real software, not like generated filler.
#
# Every kind writes the store paths in $deps (its dependencies) into
# nix-support/deps: Nix's reference scan then records them as references,
# so the closure has a real reference graph.
#
#   kind=package      the regular files of Debian package $pkg, at their
#                     paths and with their modes (`dpkg-query -L`)
#   kind=small-files  the first $count small files (< 16 KiB) of
#                     /usr/include and /usr/share, in sorted order
#   kind=blob         one file `blob` of exactly $bytes bytes: the executables
#                     and libraries of /usr/bin and /usr/lib concatenated,
#                     pass after pass, each pass in another order
#   kind=root         only the references

mkdir -p "$out/nix-support"
for d in $deps; do echo "$d"; done >"$out/nix-support/deps"

# Copies the NUL-separated paths on stdin under $out, keeping their
# directories and modes. Files the build user cannot read are skipped with
# a message in the build log.
copy_files() {
  xargs -0 -r cp --parents --preserve=mode -t "$out" || true
}

case "$kind" in
package)
  # `find -maxdepth 0 -type f` keeps the regular files of the list (not its
  # directories, symlinks or files since removed).
  dpkg-query -L "$pkg" | grep '^/' | tr '\n' '\0' |
    xargs -0 -r sh -c 'find "$@" -maxdepth 0 -type f -readable -print0 2>/dev/null' sh |
    copy_files
  ;;
small-files)
  find /usr/include /usr/share -type f -size -16k -readable -print0 2>/dev/null |
    LC_ALL=C sort -z | head -z -n "$count" | copy_files
  ;;
blob)
  # The pool is several hundred MiB, so one pass is far longer than any
  # compressor's window (xz -6: 8 MiB) and a pass never matches the previous
  # one the way a repeated or all-zero file would. Each pass shuffles the
  # pool with a different pool file as shuf's (deterministic) random source.
  find /usr/lib/x86_64-linux-gnu /usr/bin -type f -size +64k -size -64M -readable 2>/dev/null |
    LC_ALL=C sort >pool
  [ -s pool ] || { echo "blob: no source files found" >&2; exit 1; }
  n=$(wc -l <pool)
  i=0
  {
    # Ends when head has all it needs and cat dies of SIGPIPE (or after
    # 1000 passes, which the size check below then reports).
    while [ $i -lt 1000 ]; do
      seed=$(sed -n "$((i % n + 1))p" pool)
      shuf --random-source="$seed" pool | tr '\n' '\0' | xargs -0 cat || break
      i=$((i + 1))
    done
  } 2>/dev/null | head -c "$bytes" >"$out/blob"
  [ "$(stat -c %s "$out/blob")" -eq "$bytes" ] || { echo "blob: short file" >&2; exit 1; }
  ;;
root) ;;
*)
  echo "unknown kind: $kind" >&2
  exit 1
  ;;
esac
