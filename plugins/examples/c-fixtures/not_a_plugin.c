/* empty.c - test fixture: a valid shared library that is not a pop3d plugin. */
int pop3d_fixture_not_a_plugin(void) { return 0; }
