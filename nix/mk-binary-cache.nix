# A flat-file binary cache of the closure of `rootPaths`, as a derivation: in the style of
# nixpkgs' mkBinaryCache, but written by narcache, and with no nix command inside the build.
# Nix hands the builder the closure's metadata through exportReferencesGraph (in .attrs.json,
# with __structuredAttrs); narcache reads it with --from-attrs, packs every path and checks
# each NarHash against the one Nix recorded. The output is the cache directory:
#
#   nix-build -E 'import ./nix/mk-binary-cache.nix { rootPaths = [ (import <nixpkgs> {}).hello ]; }'
#   nix copy --from file://$PWD/result --to ./store --no-check-sigs /nix/store/…-hello-…
#
# The same closure gives the same bytes (nix-build --check passes). The narinfos carry what
# exportReferencesGraph carries: no Deriver line and no signature; CA for content-addressed
# paths. As with mkBinaryCache, the output refers to the paths it holds (its narinfos name them).
#
# node and narcache are taken from the machine, not from the store: the build needs
# `sandbox = false` (or those paths in extra-sandbox-paths). By default node is the first one
# on the PATH of the evaluating process and narcache is this checkout's dist/bin.js (run
# `npm run build` first); pass either to use another. Another narcache may write other bytes, so
# the derivation names the one it runs: a hash, taken at evaluation, of the files of its package
# (`dist`, `native` and package.json in the directory above `narcache`'s). A changed narcache is
# then another derivation, never handed the output that an older one built.
let
  onPath =
    program:
    let
      dirs = builtins.filter (d: builtins.isString d && builtins.substring 0 1 d == "/") (
        builtins.split ":" (builtins.getEnv "PATH")
      );
      found = builtins.filter (d: builtins.pathExists "${d}/${program}") dirs;
    in
    if found == [ ] then
      throw "mk-binary-cache.nix: no ${program} on PATH; pass ${program} = \"/absolute/path\""
    else
      "${builtins.head found}/${program}";
  # The entries `names` of directory `path` (all if null), each with its SHA-256 or, for a
  # directory, its own listing.
  listing =
    path: names:
    let
      entries = builtins.readDir path;
      describe =
        name:
        let
          type = entries.${name};
          file = "${path}/${name}";
        in
        if type == "directory" then
          listing file null
        else if type == "regular" then
          builtins.hashFile "sha256" file
        else
          type;
      present = builtins.filter (name: entries ? ${name}) (
        if names == null then builtins.attrNames entries else names
      );
    in
    builtins.concatStringsSep "\n" (map (name: "${name} (${describe name})") present);
  packageId =
    program:
    builtins.hashString "sha256" (
      listing (dirOf (dirOf program)) [
        "dist"
        "native"
        "package.json"
      ]
    );
in
{
  rootPaths,
  compression ? "zstd",
  node ? onPath "node",
  narcache ? toString ../dist/bin.js,
  name ? "binary-cache",
}:
derivation {
  inherit name;
  system = builtins.currentSystem;
  builder = node;
  # The build directory is the working directory, .attrs.json in it; the output path is
  # known only to Nix, which rewrites the placeholder in the arguments.
  args = [
    narcache
    "build"
    "--from-attrs"
    ".attrs.json"
    "--output"
    (builtins.placeholder "out")
    "--compression"
    compression
  ];
  narcacheId = packageId narcache;
  __structuredAttrs = true;
  exportReferencesGraph.closure = rootPaths;
  # Packing local paths is faster than asking a substituter for the result.
  preferLocalBuild = true;
  allowSubstitutes = false;
}
