from anime_client.cli import main

main()
