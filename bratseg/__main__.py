from bratseg.cli import console_main

console_main()
