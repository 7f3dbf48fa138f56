"""The engine build: llama.cpp compiled for the CPU it runs on, proven by a self-test.

llama.cpp's CPU kernels are compiled for one instruction set. A build made with
``-march=native`` on one machine crashes with an illegal instruction (SIGILL) on a machine
that lacks any of those instructions, and at the pinned version its AMX path crashes even on
machines that have AMX. This package keeps both from reaching a user:

- ``build``: the flag sets (*tiers*: ``native`` minus AMX, a portable ``avx2``, a
  ``baseline`` that runs on any x86-64 or aarch64), a wheel cache keyed by the CPU features a
  build was made for, the install, and the self-test loop that falls back a tier when the
  engine dies by a signal (``python -m corral.engine.build``; ``install.sh`` calls it);
- ``features``: the instruction sets a build uses (ggml's own report) against the ones this
  CPU has; the runner refuses to start a build this CPU cannot run, with the fix;
- ``record``: what was built and installed, and how its self-test went (``corral info``);
- ``selftest`` and ``probe``: child processes that load llama.cpp, so that a crash is the
  child's and its parent can say what happened.

Everything here but the two child entry points is standard library only: ``build`` runs
before the rest of corral's dependencies are installed.
"""
