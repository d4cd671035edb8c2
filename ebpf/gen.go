package ebpf

// The verdict program is C beside this package; the generated
// forward_bpfel.go and forward_bpfel.o are committed so go build needs no
// clang. `make generate` re-creates them (clang, llvm, libbpf-dev).
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type pair -type stat -type skip -type skip_key forward bpf/forward.c
