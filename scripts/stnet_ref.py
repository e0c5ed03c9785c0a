"""StNet of the 2019 PaddlePaddle video zoo restated in PyTorch, op for op from
`PaddleCV/video/models/stnet/stnet_res_model.py` (PaddlePaddle/models release/1.8), for vidkit's
parity test and benchmark: paddle.fluid does not run under Paddle 3.

fluid's ops as used there: conv2d/conv3d (cross-correlation, NCHW), batch_norm (eps 1e-5, moving
statistics in test mode), pool2d max 3/2/1 and global average, fc with softmax (logits kept
too). `fluid_state()` names every parameter as fluid.save writes them: the ResNet by hand
(`conv1_weights`, `bn2a_branch2a_scale`, ...), the Xception block by its layer names
(`xception_att_conv.w_0`, `xception_bn.w_1`, ...), the rest by layer type and creation count
(`conv3d_0.w_0`, `batch_norm_24.w_0`, `fc_0.w_0` [in, out]).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTHS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


def bn_state(bn, scale, offset, mean, var):
    return {scale: bn.weight, offset: bn.bias, mean: bn.running_mean, var: bn.running_var}


class ConvBN(nn.Module):
    """conv_bn_layer: conv2d without bias, padding (k - 1) // 2, batch_norm, optional relu."""

    def __init__(self, cin, cout, k, stride, name):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)
        self.name = name

    def forward(self, x, act):
        y = self.bn(self.conv(x))
        return F.relu(y) if act else y

    def state(self):
        bn_name = "bn_" + self.name if self.name == "conv1" else "bn" + self.name[3:]
        s = {self.name + "_weights": self.conv.weight}
        s.update(bn_state(self.bn, bn_name + "_scale", bn_name + "_offset", bn_name + "_mean", bn_name + "_variance"))
        return s


class Bottleneck(nn.Module):
    def __init__(self, cin, planes, stride, name):
        super().__init__()
        self.a = ConvBN(cin, planes, 1, 1, name + "_branch2a")
        self.b = ConvBN(planes, planes, 3, stride, name + "_branch2b")
        self.c = ConvBN(planes, planes * 4, 1, 1, name + "_branch2c")
        self.short = ConvBN(cin, planes * 4, 1, stride, name + "_branch1") if cin != planes * 4 or stride != 1 else None

    def forward(self, x):
        y = self.c(self.b(self.a(x, True), True), False)
        s = self.short(x, False) if self.short is not None else x
        return F.relu(s + y)


class Temporal(nn.Module):
    """temporal_conv_bn: x + batch_norm(relu(conv3d(x))) over [B, C, seg_num, H, W]."""

    def __init__(self, c, seg_num):
        super().__init__()
        self.conv = nn.Conv3d(c, c, (3, 1, 1), 1, (1, 0, 0), bias=True)
        self.bn = nn.BatchNorm3d(c, eps=1e-5)
        self.seg_num = seg_num

    def forward(self, x):
        shape = x.shape
        t = x.reshape(-1, self.seg_num, *shape[1:]).permute(0, 2, 1, 3, 4)
        out = self.bn(F.relu(self.conv(t))) + t
        return out.permute(0, 2, 1, 3, 4).reshape(shape)


class Xception(nn.Module):
    def __init__(self, c=2048):
        super().__init__()
        h = c // 2
        self.bn = nn.BatchNorm2d(c)
        self.att_conv = nn.Conv2d(c, c, (3, 1), 1, (1, 0), groups=c)
        self.att_2 = nn.Conv2d(c, h, 1)
        self.bndw = nn.BatchNorm2d(h)
        self.att1 = nn.Conv2d(h, h, (3, 1), 1, (1, 0), groups=h)
        self.att1_2 = nn.Conv2d(h, h, 1)
        self.dw = nn.Conv2d(c, h, 1)
        self.bn2 = nn.BatchNorm2d(h)

    def forward(self, x):
        bn = self.bn(x)
        att = F.relu(self.bndw(self.att_2(self.att_conv(bn))))
        att = self.att1_2(self.att1(att))
        return F.relu(self.bn2(self.dw(bn) + att))

    def state(self):
        s = {}
        for n in ["bn", "bndw", "bn2"]:
            s.update(bn_state(getattr(self, n), *(f"xception_{n}.{leaf}" for leaf in ["w_0", "b_0", "w_1", "w_2"])))
        for n in ["att_conv", "att_2", "att1", "att1_2", "dw"]:
            m = getattr(self, n)
            s[f"xception_{n}.w_0"] = m.weight
            s[f"xception_{n}.b_0"] = m.bias
        return s


class StNet(nn.Module):
    def __init__(self, layers=50, seg_num=7, seglen=5, class_dim=400, width=64):
        super().__init__()
        self.seg_num, self.seglen = seg_num, seglen
        self.conv1 = ConvBN(3 * seglen, width, 7, 2, "conv1")
        blocks, cin = [], width
        for block, n in enumerate(DEPTHS[layers]):
            planes = width << block
            for i in range(n):
                if layers in (101, 152) and block == 2:
                    name = "res4a" if i == 0 else "res4b" + str(i)
                else:
                    name = "res" + str(block + 2) + chr(97 + i)
                blocks.append(Bottleneck(cin, planes, 2 if i == 0 and block != 0 else 1, name))
                cin = planes * 4
        self.blocks = nn.ModuleList(blocks)
        self.depth = DEPTHS[layers]
        self.temporal = nn.ModuleList([Temporal(width * 8, seg_num), Temporal(width * 16, seg_num)])
        self.xception = Xception(cin)
        self.fc = nn.Linear(cin // 2, class_dim)

    def forward(self, x):
        """x [B, seg_num, seglen * 3, H, W] → (logits, softmax)."""
        seg_num = x.shape[1]
        for t in self.temporal:
            t.seg_num = seg_num
        x = x.reshape(-1, x.shape[2], x.shape[3], x.shape[4])
        y = F.max_pool2d(self.conv1(x, True), 3, 2, 1)
        k = 0
        for block, n in enumerate(self.depth):
            for _ in range(n):
                y = self.blocks[k](y)
                k += 1
            if block == 1:
                y = self.temporal[0](y)
            if block == 2:
                y = self.temporal[1](y)
        pool = y.mean(dim=(2, 3), keepdim=True)
        feature = pool.reshape(-1, seg_num, pool.shape[1], 1).permute(0, 2, 1, 3)
        xfeat = self.xception(feature)
        out = xfeat.amax(dim=(2, 3)).reshape(-1, xfeat.shape[1])
        logits = self.fc(out)
        return logits, F.softmax(logits, dim=1)

    def fluid_state(self):
        """Parameters under fluid's names, as numpy arrays (fluid.save's pickle)."""
        s = self.conv1.state()
        for b in self.blocks:
            for m in [b.a, b.b, b.c] + ([b.short] if b.short is not None else []):
                s.update(m.state())
        # batch_norm_N counts every unnamed batch_norm call: conv1's, then each bottleneck's
        # three and its shortcut's, with the temporal blocks' after res3 and res4.
        bn_count = 1 + sum(3 * n + 1 for n in self.depth[:2])
        for i, t in enumerate(self.temporal):
            s[f"conv3d_{i}.w_0"] = t.conv.weight
            s[f"conv3d_{i}.b_0"] = t.conv.bias
            s.update(bn_state(t.bn, *(f"batch_norm_{bn_count}.{leaf}" for leaf in ["w_0", "b_0", "w_1", "w_2"])))
            bn_count += 1 + 3 * self.depth[2] + 1
        s.update(self.xception.state())
        s["fc_0.w_0"] = self.fc.weight.t()
        s["fc_0.b_0"] = self.fc.bias
        return {k: v.detach().cpu().numpy().copy() for k, v in s.items()}


def randomize(model, seed=0):
    """Random batch-norm statistics and affine parameters, random biases: a parity check must
    see them."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.4 - 0.2)
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.4 - 0.2)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            if isinstance(m, (nn.Conv2d, nn.Conv3d)) and m.bias is not None:
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) * 0.2 - 0.1)
