package xdprelay

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type session_key -type session_value -type bind_path -type stat relay ../../../bpf/relay.c
