"""A plain-PyTorch LSTM (Python loop over time) for checking what nn.LSTM cannot:
other activations and masks. Slow and obviously right; float64 in the tests."""
import torch

from torchlstm import activations


def lstm_layer(x, h0, c0, w_ih, w_hh, b_ih=None, b_hh=None, w_hr=None, mask=None,
               reverse=False, activation="tanh", recurrent_activation="sigmoid",
               input_keep=None, recurrent_keep=None, zoneout_h=None, zoneout_c=None):
    """x (T,B,I) -> (output (T,B,Hout), h_n, c_n); at a masked step the state carries over
    and the output holds the carried h (the torchlstm.layer_forward contract).

    Regularisers (Keras dropout, zoneout), as the op takes them: input_keep (B,I) scales
    every step's input, recurrent_keep (B,Hout) the h fed to W_hh (not the carried h);
    zoneout_h (T,B,Hout), zoneout_c (T,B,H): c = z c_prev + (1-z) c~, h = z h_prev +
    (1-z) h~ with h~ = o act(c~) (then W_hr). A masked step still carries the state."""
    act = activations.reference(activation)
    ract = activations.reference(recurrent_activation)
    h, c = h0, c0
    outs = [None] * x.shape[0]
    steps = range(x.shape[0] - 1, -1, -1) if reverse else range(x.shape[0])
    for t in steps:
        xt = x[t] if input_keep is None else x[t] * input_keep
        h_in = h if recurrent_keep is None else h * recurrent_keep
        a = xt @ w_ih.t() + h_in @ w_hh.t()
        if b_ih is not None:
            a = a + b_ih
        if b_hh is not None:
            a = a + b_hh
        ai, af, ag, ao = a.chunk(4, dim=1)
        i, f, g, o = ract(ai), ract(af), act(ag), ract(ao)
        c_new = f * c + i * g
        h_new = o * act(c_new)
        if w_hr is not None:
            h_new = h_new @ w_hr.t()
        if zoneout_c is not None:
            c_new = zoneout_c[t] * c + (1 - zoneout_c[t]) * c_new
        if zoneout_h is not None:
            h_new = zoneout_h[t] * h + (1 - zoneout_h[t]) * h_new
        if mask is not None:
            m = mask[t].unsqueeze(1)
            h_new = torch.where(m, h_new, h)
            c_new = torch.where(m, c_new, c)
        h, c = h_new, c_new
        outs[t] = h
    return torch.stack(outs), h, c
