"""resnet-cifar: ResNet on CIFAR-10/100 in TensorFlow 2, the 2016 TF-models trainer and newer recipes."""
