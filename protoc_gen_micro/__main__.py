from protoc_gen_micro.plugin import main

main()
