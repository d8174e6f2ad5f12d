from micro.cli import main

main()
