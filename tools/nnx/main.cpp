// nnx: the command-line tool (run, info, convert).
int main() { return 0; }
