"""A PyTorch restatement of the 2019 PaddlePaddle video zoo's TALL (PaddlePaddle/models
release/1.8, PaddleCV/video/models/tall/tall_net.py), op for op as the fluid program runs it, for
vidkit's parity fixtures (fluid does not run on Paddle 3). Parameters keep fluid's names and
layouts: fc weights [in, out], 1x1 conv weights [out, in, 1, 1].
"""
import torch


def l2_normalize(x, axis=1, epsilon=1e-12):
    # fluid.layers.l2_normalize: x / sqrt(sum(x^2) + epsilon) (norm_op)
    return x / torch.sqrt(torch.sum(x * x, dim=axis, keepdim=True) + epsilon)


class TallNet(torch.nn.Module):
    def __init__(self, visual, sentence, semantic, hidden, output=3):
        super().__init__()
        self.semantic_size = semantic
        # fluid.layers.fc(..., bias_attr=False): W [in, out], NormalInitializer(0, 1)
        self.v2s_lt_weights = torch.nn.Parameter(torch.randn(visual, semantic))
        self.s2s_lt_weights = torch.nn.Parameter(torch.randn(sentence, semantic))
        # conv2d default initializer: Normal(0, sqrt(2 / fan_in))
        self.mid_out_weights = torch.nn.Parameter(torch.randn(hidden, 4 * semantic, 1, 1) * (2.0 / (4 * semantic)) ** 0.5)
        self.sim_mat_weights = torch.nn.Parameter(torch.randn(output, hidden, 1, 1) * (2.0 / hidden) ** 0.5)

    def cross_modal_comb(self, visual_feat, sentence_embed, batch_size):
        visual_feat = visual_feat.reshape(1, -1, self.semantic_size)
        vv_feature = visual_feat.expand(batch_size, -1, -1)  # fluid expand [B, 1, 1]
        sentence_embed = sentence_embed.reshape(-1, 1, self.semantic_size)
        ss_feature = sentence_embed.expand(-1, batch_size, -1)  # fluid expand [1, B, 1]
        concat_feature = torch.cat([vv_feature, ss_feature], dim=2)
        mul_feature = vv_feature * ss_feature
        add_feature = vv_feature + ss_feature
        return torch.cat([mul_feature, add_feature, concat_feature], dim=2)

    def forward(self, images, sentences):
        batch_size = images.shape[0]
        transformed_clip = l2_normalize(images @ self.v2s_lt_weights, axis=1)
        transformed_sentence = l2_normalize(sentences @ self.s2s_lt_weights, axis=1)
        v = self.cross_modal_comb(transformed_clip, transformed_sentence, batch_size)
        v = v.unsqueeze(0).permute(0, 3, 1, 2)
        mid = torch.relu(torch.nn.functional.conv2d(v, self.mid_out_weights))
        sim = torch.nn.functional.conv2d(mid, self.sim_mat_weights)
        return sim.squeeze(0)  # [3, B, B]

    def fluid_state(self):
        return {k: v.detach().numpy().astype("float32") for k, v in self.named_parameters()}


def loss(outs, offs):
    """TALLNET.loss: the alignment loss over the B x B matrix and 0.01 x L1 on the offsets."""
    sim_score_mat, p_reg_mat, l_reg_mat = outs[0], outs[1], outs[2]
    input_size = outs.shape[1]
    I = torch.eye(input_size)
    all1 = torch.ones(input_size, input_size)
    mask_mat = -2 * I + all1
    alpha = 1.0 / input_size
    lambda_regression = 0.01
    para_mat = I + alpha * all1
    loss_mat = torch.log(all1 + torch.exp(mask_mat * sim_score_mat)) * para_mat
    loss_align = loss_mat.mean()
    reg_ones = torch.ones(input_size, 1)
    l_reg_diag = (l_reg_mat * I).t() @ reg_ones
    p_reg_diag = (p_reg_mat * I).t() @ reg_ones
    offset_pred = torch.cat([p_reg_diag, l_reg_diag], dim=1)
    loss_reg = torch.abs(offset_pred - offs).mean()
    return lambda_regression * loss_reg + loss_align, loss_align, loss_reg
