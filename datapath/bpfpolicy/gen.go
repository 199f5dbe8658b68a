package bpfpolicy

// The programs and maps come from bpf/policy.c, compiled with the pinned clang
// (`make bpf`); the generated policy_bpfel.{go,o} are committed.
//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type drop_reason -type pass_reason -type sizes -type lpm4_key -type lpm6_key -type gen_meta -type pfx4_bucket -type pfx6_slot -type pfx6_bucket -type ident_val -type rule_key -type rule_val -type port_range -type rule_slot policy ../../bpf/policy.c
