def compute_accuracy(output, target, topk=(1,)):
    """Top-k accuracies in percent, one 1-element tensor per k (Dassl's ``compute_accuracy``)."""
    if isinstance(output, (tuple, list)):
        output = output[0]
    pred = output.topk(max(topk), 1, True, True).indices.t()
    correct = pred.eq(target.view(1, -1).expand_as(pred))
    return [correct[:k].reshape(-1).float().sum(0, keepdim=True).mul_(100.0 / target.size(0)) for k in topk]
