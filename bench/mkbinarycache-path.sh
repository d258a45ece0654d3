# One store path the way nixpkgs' mkBinaryCache writes it (run by xargs -P,
# one path per core): `nix-store --dump | zstd` into a file, `nix-hash
# --flat` of that file, the file renamed to its hash, then the narinfo.
#   $1 the cache directory   $2 a directory of prepared narinfo tails
#   $3 the store path         (NarHash, NarSize, References: what
#                              mkBinaryCache gets from exportReferencesGraph)
set -e
cache=$1 meta=$2 path=$3
base=${path##*/}
hash=${base%%-*}
tmp="$cache/nar/$hash.nar.zst"
nix-store --dump "$path" | zstd -q -c >"$tmp"
file_hash=$(nix-hash --flat --base32 --type sha256 "$tmp")
mv "$tmp" "$cache/nar/$file_hash.nar.zst"
{
  printf 'StorePath: %s\nURL: nar/%s.nar.zst\nCompression: zstd\n' "$path" "$file_hash"
  printf 'FileHash: sha256:%s\nFileSize: %s\n' "$file_hash" "$(stat -c %s "$cache/nar/$file_hash.nar.zst")"
  cat "$meta/$hash"
} >"$cache/$hash.narinfo"
