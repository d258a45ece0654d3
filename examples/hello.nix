# A small closure for the quick start: a library, a program that refers to
# it, and a root that refers to both, built with nothing but /bin/sh.
let
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = "/bin/sh";
    args = [ "-c" script ];
    PATH = "/usr/bin:/bin";
  };
  lib = mk "hello-lib" ''
    mkdir -p $out/share
    echo "Hello from a Nix store path" > $out/share/greeting
  '';
  bin = mk "hello-bin" ''
    mkdir -p $out/bin
    printf '#!/bin/sh\ncat ${lib}/share/greeting\n' > $out/bin/hello
    chmod +x $out/bin/hello
  '';
in
mk "hello" ''
  mkdir -p $out
  ln -s ${bin}/bin/hello $out/hello
  echo ${lib} > $out/uses
''
