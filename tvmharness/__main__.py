from .cli import main

if __name__ == "__main__":  # the rack starts its job workers by spawning, which imports this module again
    main()
