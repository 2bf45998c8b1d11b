"""mvee: a multi-variant execution environment for Linux x86 under ptrace."""
