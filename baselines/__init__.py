"""The model zoo every comparison uses: CIFAR VGG/ResNets and torchvision mobile nets."""
