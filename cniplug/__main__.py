from cniplug.cli import main

main()
