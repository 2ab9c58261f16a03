from lorasel.cli import main

main()
